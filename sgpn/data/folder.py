"""A folder of aligned face crops (FFHQ, CelebA-HQ or your own), read with PIL.

Files are checked once, when the dataset is built: unreadable ones are reported by name and
left out. A file that passes that check but fails to decode later stops the run with its name:
training on another image in its place would silently change the data. Grayscale, palette, CMYK
and 16-bit images are converted to RGB; every image is resized to ``size`` (bicubic,
antialiased), with one warning that counts the images of another size, since a folder of mixed
sizes (crops of different origins) is worth knowing about but training on it is sound.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

#: File suffixes read as images (case-insensitive); other files are ignored, with a note.
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".ppm", ".tif", ".tiff", ".webp")

#: Errors PIL raises for files it cannot read.
READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


class FaceFolder(Dataset):
    """Aligned faces under ``root`` (searched recursively), as ``(3, size, size)`` in [0, 1].

    Items are dicts: ``hq``, ``index`` and ``path``. ``verify`` checks every file with PIL
    when the dataset is built (``Image.verify``: headers and checksums, no full decode);
    a file that still fails to decode later raises an error naming it. Non-square images are
    centre-cropped to a square first.
    """

    def __init__(self, root: str | os.PathLike, size: int = 512, verify: bool = True):
        if int(size) != size or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        self.root, self.size = Path(root), int(size)
        if not self.root.exists():
            raise FileNotFoundError(f"face folder not found: {self.root}")
        if not self.root.is_dir():
            raise NotADirectoryError(f"not a folder of face images: {self.root}")
        files = sorted(p for p in self.root.rglob("*") if p.is_file())
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        others = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        if others:
            warnings.warn(f"{self.root}: ignored {len(others)} file(s) without an image suffix "
                          f"({', '.join(p.name for p in others[:3])}{', ...' if len(others) > 3 else ''})",
                          stacklevel=2)
        self.files, bad, non_square, other_sizes = [], [], [], {}
        for path in images:
            try:
                with Image.open(path) as image:
                    width, height = image.size
                    if verify:
                        image.verify()
            except READ_ERRORS as err:
                bad.append(path)
                warnings.warn(f"skipping unreadable image {path}: {err}", stacklevel=2)
                continue
            if width != height:
                non_square.append(path)
            if (width, height) != (self.size, self.size):
                other_sizes[(width, height)] = other_sizes.get((width, height), 0) + 1
            self.files.append(path)
        if not self.files:
            raise ValueError(f"no readable images in {self.root} (looked for {', '.join(IMAGE_SUFFIXES)}; "
                             f"{len(bad)} unreadable, {len(others)} other files)")
        if non_square:
            warnings.warn(f"{self.root}: {len(non_square)} image(s) are not square (first: "
                          f"{non_square[0].name}); they are centre-cropped to a square", stacklevel=2)
        if other_sizes:
            sizes = ", ".join(f"{n} at {w}x{h}" for (w, h), n in sorted(other_sizes.items(), key=lambda i: (-i[1], i[0]))[:4])
            warnings.warn(f"{self.root}: {sum(other_sizes.values())} of {len(self.files)} images are not "
                          f"{self.size}x{self.size} px ({sizes}); they are resized to {self.size} px", stacklevel=2)

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"FaceFolder({str(self.root)!r}, size={self.size}, {len(self)} images)"

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index = index % len(self)
        path = self.files[index]
        try:
            hq = load_image(path, self.size)
        except READ_ERRORS as err:
            raise OSError(f"training image {path} no longer decodes ({err}); it passed the check when the "
                          f"dataset was built: fix or remove the file and restart (or resume)") from err
        return {"hq": hq, "index": index, "path": str(path)}


def read_rgb(path: str | os.PathLike) -> torch.Tensor:
    """A whole image as ``(3, H, W)`` float in [0, 1]: EXIF orientation applied, converted to RGB
    (16-bit grayscale scaled, not clipped; alpha, palette, CMYK and grayscale through PIL)."""
    with Image.open(path) as image:
        return _to_tensor(_rgb(image))


def load_image(path: str | os.PathLike, size: int) -> torch.Tensor:
    """One image as ``(3, size, size)`` float in [0, 1]: read as :func:`read_rgb` does,
    centre-cropped to a square, resized (bicubic)."""
    with Image.open(path) as image:
        image = _rgb(image)
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        if side != size:
            image = image.resize((size, size), Image.Resampling.BICUBIC)
        return _to_tensor(image)


def _rgb(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grayscale: PIL's RGB clips
        levels = (np.asarray(image, dtype=np.float64) / 257.0).round().clip(0, 255)
        image = Image.fromarray(levels.astype(np.uint8))
    return image.convert("RGB")


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
