"""Perceptual similarities from torchvision backbones, with local weights only.

LPIPS (torchmetrics) needs torchvision's ImageNet backbone, and the VGG similarity
(FRRffusion's "VGG") torchvision's VGG-16. Nothing is downloaded: the weight file is looked for
*before* the metric is built, in this order: an explicit path, an environment variable
(``SGPN_LPIPS_WEIGHTS``, ``SGPN_VGG_WEIGHTS``), then the torch hub cache
(``torch.hub.get_dir()/checkpoints``) where torchvision keeps it. When none is found,
:class:`WeightsUnavailable` says which file to put where.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

from sgpn.images import check_image_pair
from sgpn.weights import read_state_dict

LPIPS_ENV = "SGPN_LPIPS_WEIGHTS"
#: LPIPS backbone -> (torchvision model, its ImageNet weights enum), as torchmetrics builds them.
LPIPS_BACKBONES = {"alex": ("AlexNet", "AlexNet_Weights"), "vgg": ("VGG-16", "VGG16_Weights"),
                   "squeeze": ("SqueezeNet 1.1", "SqueezeNet1_1_Weights")}


class WeightsUnavailable(FileNotFoundError):
    """No local weight file for a metric; the message says which file to put where."""



def hub_checkpoint(filename: str) -> Path:
    """Where torchvision looks for (and would download) ``filename``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def lpips_weights_file(net: str) -> str:
    """File name of the ImageNet weights torchmetrics' LPIPS loads for backbone ``net``."""
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"LPIPS backbone must be one of {sorted(LPIPS_BACKBONES)}, got {net!r}")
    weights = getattr(torchvision.models, LPIPS_BACKBONES[net][1]).DEFAULT
    return os.path.basename(urlparse(weights.url).path)


def find_weights(filename: str, description: str, env: str, path: str | os.PathLike | None = None) -> Path:
    """The local weight file: ``path``, else ``$env``, else the torch hub cache.

    An explicit ``path`` or ``$env`` that names no file is an error (``FileNotFoundError``);
    nothing configured and nothing cached raises :class:`WeightsUnavailable` saying where to put
    the file. A file that is found must be a readable state dict of finite tensors (read with
    ``weights_only=True``); otherwise ``ValueError``.
    """
    if path is not None:
        chosen, origin = Path(path), ""
    elif os.environ.get(env):
        chosen, origin = Path(os.environ[env]), f" (from {env})"
    else:
        chosen, origin = hub_checkpoint(filename), ""
        if not chosen.is_file():
            raise WeightsUnavailable(f"unavailable (no local weights: put {description} weights "
                                     f"at {chosen}, or point {env} at such a file)")
    if not chosen.is_file():
        raise FileNotFoundError(f"{description} weights not found at {chosen}{origin}")
    state = read_state_dict(chosen)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{chosen}: tensor(s) {bad[:5]} contain NaN or Inf")
    return chosen


@contextmanager
def _hub_cache_holding(file: Path, filename: str) -> Iterator[None]:
    """Make ``file`` visible as ``filename`` in a temporary torch hub cache, for libraries that
    only read the cache (torchvision). The previous hub location is restored exactly: through
    ``TORCH_HOME`` when the hub follows it, else through ``torch.hub.set_dir``."""
    with tempfile.TemporaryDirectory() as home:
        hub = Path(home) / "hub"
        (hub / "checkpoints").mkdir(parents=True)
        (hub / "checkpoints" / filename).symlink_to(file.resolve())
        previous_dir, previous_home = torch.hub.get_dir(), os.environ.get("TORCH_HOME")
        pinned = False
        try:
            os.environ["TORCH_HOME"] = home
            pinned = Path(torch.hub.get_dir()) != hub  # someone called torch.hub.set_dir
            if pinned:
                torch.hub.set_dir(str(hub))
            yield
        finally:
            if previous_home is None:
                del os.environ["TORCH_HOME"]
            else:
                os.environ["TORCH_HOME"] = previous_home
            if pinned:
                torch.hub.set_dir(previous_dir)


def build_lpips(net: str = "alex", weights: str | os.PathLike | None = None) -> nn.Module:
    """torchmetrics' LPIPS (inputs in [0, 1]) with local backbone weights only.

    Raises :class:`WeightsUnavailable` when no weights are found (see :func:`find_weights`).
    LPIPS's own linear layers ship inside torchmetrics.
    """
    filename = lpips_weights_file(net)
    description = f"torchvision's ImageNet {LPIPS_BACKBONES[net][0]}"
    file = find_weights(filename, description, LPIPS_ENV, weights)
    cached = hub_checkpoint(filename)
    try:
        if cached.is_file() and cached.resolve() == file.resolve():
            return LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True)
        with _hub_cache_holding(file, filename):
            return LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True)
    except RuntimeError as err:  # load_state_dict: missing / unexpected / mis-shaped keys
        raise ValueError(f"{file} does not hold {description} weights: {err}") from err


#: torchvision's ImageNet VGG-16, whose penultimate features give the VGG similarity.
VGG_FILE, VGG_ENV = "vgg16-397923af.pth", "SGPN_VGG_WEIGHTS"
#: ImageNet's channel statistics, which torchvision's classifiers expect.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class VGGSimilarity(nn.Module):
    """Per image ``(B,)``: the cosine similarity of two images' VGG-16 penultimate (fc7)
    features, at 224 px with ImageNet normalisation (FRRffusion reports it as "VGG"). Images
    ``(B, 3, H, W)`` in [0, 1]. ``network`` maps such a normalised batch to features;
    :func:`build_vgg_similarity` gives the VGG-16 one."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        image = nn.functional.interpolate(image, size=(224, 224), mode="bilinear", align_corners=False,
                                          antialias=image.shape[-1] > 224)
        return self.network((image - self.mean) / self.std).flatten(1)

    @torch.no_grad()
    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_image_pair(output, target)
        return nn.functional.cosine_similarity(self.features(output), self.features(target), dim=1)


def build_vgg_similarity(weights: str | os.PathLike | None = None) -> VGGSimilarity:
    """:class:`VGGSimilarity` on torchvision's VGG-16 (up to fc7 and its ReLU) with local
    ImageNet weights only; :class:`WeightsUnavailable` names the file when none is found."""
    file = find_weights(VGG_FILE, "torchvision's ImageNet VGG-16", VGG_ENV, weights)
    vgg = torchvision.models.vgg16(weights=None)
    try:
        vgg.load_state_dict(read_state_dict(file))
    except RuntimeError as err:
        raise ValueError(f"{file} does not hold torchvision's VGG-16 weights: {err}") from err
    vgg.classifier = vgg.classifier[:5]  # fc6, ReLU, dropout, fc7, ReLU
    return VGGSimilarity(vgg)
