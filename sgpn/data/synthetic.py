"""Synthetic faces rendered from the morphable model, with what the model cannot represent.

A face is drawn by the 3DMM from random coefficients (so its 257 coefficients and 68 landmarks
are known exactly), then, at the output resolution, everything a real photo adds on top:

* skin detail the smooth model lacks: fine grain and pores, mottling, freckles, stubble;
* eyes with a fibrous iris, a crisp pupil and a specular highlight;
* hair (a fringe over the forehead, locks over the sides) and a background, neck and clothes;
* occluders: sunglasses, eyeglasses, hats, hands or microphones, with a mask of where they
  cover the face.

The last two are what a 3DMM render (SGPN's I_3d, F_3d) knows nothing about, so a restorer has
to take them from the degraded input (F_lq): this is what makes AFFB's choice meaningful.

Every item is a pure function of ``(seed, index)``: a ``torch.Generator`` seeded from both
drives the coefficients and every procedural draw, in a fixed order.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import sys
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from sgpn.data import procedural
from sgpn.data.face_painter import FacePainter, SurfaceMap
from sgpn.data.procedural import Draws, derive_seed
from sgpn.face3d import coefficients
from sgpn.face3d.face_model import FaceModel, load_face_model
from sgpn.face3d.renderer import Renderer

#: Alignment jitter added to the model's random coefficients: translation x, y and z ranges.
#: The depth stays within half a percent of the camera's distance (10): a face 3 % larger and
#: 3 % further away draws the same image, so a wider depth range (-0.6..0.3, 9 % of the
#: distance, against the identity's 2 % spread of face size) leaves a face's width and length
#: unreadable by any regressor (an MLP on the exact 68 landmarks reads them with R² 0.70 and
#: 0.67; told the depth too, 0.97 and 0.98).
TRANSLATION_RANGE = ((-0.06, 0.06), (-0.06, 0.06), (-0.05, 0.05))


class SyntheticFaces(Dataset):
    """Faces rendered from the morphable model plus procedural hair, skin detail, eyes,
    background and occluders; fully offline and deterministic per index.

    Items are dicts: ``hq`` ``(3, S, S)`` in [0, 1] (8-bit levels, like a photo), ``coeffs``
    ``(257,)`` (exact), ``landmarks`` ``(68, 2)`` in pixels at ``S`` (projected model keypoints,
    also where occluded), ``occluder_mask`` ``(1, S, S)`` in {0, 1} (an occluder covers a pixel
    of the rendered face), ``face_mask`` ``(1, S, S)`` (render coverage), ``occluders``
    ``(5,)`` bool (which of :data:`OCCLUDERS` the face wears) and ``index``.

    ``face_model`` defaults to :func:`sgpn.face3d.face_model.load_face_model` and must live on the CPU.
    ``cache`` keeps every item drawn, compactly (8-bit image, boolean masks), and returns copies
    of it later: identical values, without paying for the render again. :meth:`prerender`
    draws them all at once into a file that later runs read back.
    """

    def __init__(self, size: int = 64, length: int = 1000, seed: int = 0,
                 face_model: FaceModel | None = None, occluder_prob: float = 0.5, cache: bool = False):
        if int(size) != size or size < 16:
            raise ValueError(f"size must be an integer of at least 16 pixels, got {size!r}")
        if int(length) != length or length < 0:
            raise ValueError(f"length must be a non-negative integer, got {length!r}")
        if not 0.0 <= occluder_prob <= 1.0:
            raise ValueError(f"occluder_prob must lie in [0, 1], got {occluder_prob!r}")
        self.size, self.length, self.seed = int(size), int(length), int(seed)
        self.occluder_prob = float(occluder_prob)
        self.face_model = load_face_model() if face_model is None else face_model
        if self.face_model.mean_shape.device.type != "cpu":
            raise ValueError("SyntheticFaces draws on the CPU: pass a face model on the CPU")
        self.renderer = Renderer(self.size, backend="fast")
        self.surface = SurfaceMap(self.face_model)
        self.cache: dict[int, dict] | None = {} if cache else None

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return (f"SyntheticFaces(size={self.size}, length={self.length}, seed={self.seed}, "
                f"occluder_prob={self.occluder_prob})")

    def __getitem__(self, index: int) -> dict:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} synthetic faces")
        index = index % self.length
        if self.cache is not None and index in self.cache:
            return _unpack(self.cache[index])
        item = self.draw(index)
        if self.cache is not None:
            self.cache[index] = _pack(item)
        return item

    def cache_file(self, folder: str | os.PathLike) -> Path:
        """Where :meth:`prerender` keeps this set in ``folder``: named by the set's settings and
        a fingerprint of the code and face model that draw it, so a change redraws it."""
        fingerprint = hashlib.sha1()
        for module in (sys.modules[__name__], procedural):
            fingerprint.update(inspect.getsource(module).encode())
        for tensor in (self.face_model.mean_shape, self.face_model.id_basis, self.face_model.tex_basis):
            # rounded: the open model is built with float sums that vary with the thread count
            fingerprint.update(f"{tuple(tensor.shape)} {tensor.double().abs().sum().item():.6g}".encode())
        name = (f"synthetic-{self.size}px-{self.length}-seed{self.seed}-occ{self.occluder_prob:g}-"
                f"{fingerprint.hexdigest()[:12]}.pt")
        return Path(folder) / name

    def prerender(self, folder: str | os.PathLike, progress: bool = True) -> Path:
        """Fill the cache from ``folder``'s file, drawing (with a progress bar) and writing it
        first if there is none. Training runs that share the set then skip every render."""
        if self.cache is None:
            self.cache = {}
        path = self.cache_file(folder)
        if path.is_file():
            stacked = torch.load(path, map_location="cpu", weights_only=True)
            if len(stacked["index"]) != self.length:
                raise ValueError(f"{path} holds {len(stacked['index'])} faces, not {self.length}: delete it")
            self.cache.update({i: {key: value[i].item() if key == "index" else value[i] for key, value in stacked.items()}
                               for i in range(self.length)})
            return path
        for index in tqdm(range(self.length), desc=f"pre-rendering {self.length} synthetic faces",
                          disable=not progress):
            if index not in self.cache:
                self.cache[index] = _pack(self.draw(index))
        # one tensor per key (not one object per face): it loads in a blink
        stacked = {key: torch.stack([torch.as_tensor(self.cache[i][key]) for i in range(self.length)])
                   for key in self.cache[0]}
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(stacked, partial)
        partial.replace(path)
        return path

    def draw(self, index: int) -> dict:
        """Draw item ``index`` from scratch."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, index))
        coeffs = synthetic_coefficients(self.face_model, generator)
        with torch.no_grad():
            face = self.face_model(coeffs, self.size)
            render = self.renderer(face, self.face_model.faces)
        item = FacePainter(self, Draws(generator), render).paint()
        item.update(coeffs=coeffs[0], landmarks=render.landmarks[0], index=index)
        return item



def synthetic_coefficients(face_model: FaceModel, generator: torch.Generator, batch_size: int = 1) -> Tensor:
    """The coefficients of synthetic faces: the model's random faces plus a small alignment
    jitter in translation, drawn face by face in the order :class:`SyntheticFaces` draws them."""
    low, high = torch.tensor(TRANSLATION_RANGE).T
    faces = []
    for _ in range(batch_size):
        coeffs = face_model.random_coefficients(1, generator=generator)
        coeffs[0, coefficients.SLICES["trans"]] = low + (high - low) * torch.rand(3, generator=generator)
        faces.append(coeffs)
    return torch.cat(faces)


def _pack(item: dict) -> dict:
    """An item in compact, exact form: 8-bit image (it is quantised) and boolean masks."""
    packed = dict(item)
    packed["hq"] = (item["hq"] * 255).round().to(torch.uint8)
    for key in ("occluder_mask", "face_mask"):
        packed[key] = item[key] > 0.5
    return packed


def _unpack(packed: dict) -> dict:
    item = {key: value.clone() if isinstance(value, Tensor) else value for key, value in packed.items()}
    item["hq"] = packed["hq"].float() / 255
    for key in ("occluder_mask", "face_mask"):
        item[key] = packed[key].float()
    return item
