"""``sgpn restore``: whole photos (detect, align, restore, paste back) or aligned crops.

A photo is read as RGB (grayscale, palette, CMYK, 16-bit and alpha converted as the data
module does), its faces are found by MTCNN (:mod:`sgpn.photo.detection`), each is aligned onto the
release's template at the model's resolution (:mod:`sgpn.photo.alignment`), restored, and blended
back with the feathered mask. Pixels away from every face keep their exact values; results are
written as PNG (lossless) under the photo's name. A file that cannot be read, or is too small
to hold a face, is reported and skipped: no result is ever written under another file's name.
A photo without a face is reported and copied unchanged (as PNG).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torchvision.utils import save_image
from tqdm.auto import tqdm

from sgpn.data.folder import IMAGE_SUFFIXES, READ_ERRORS, load_image, read_rgb
from sgpn.photo.alignment import align, paste_back
from sgpn.photo.detection import FACE_THRESHOLD, detect_faces


def output_path(source: str | os.PathLike, input_root: Path, output_root: Path) -> Path:
    """Where the restored copy of ``source`` goes: same relative path, PNG."""
    source = Path(source)
    try:
        relative = source.relative_to(input_root)
    except ValueError:
        relative = Path(source.name)
    return (output_root / relative).with_suffix(".png")


def input_images(source: str | os.PathLike) -> tuple[Path, list[Path]]:
    """The root and the image files of ``source``: one file, or a folder searched recursively."""
    source = Path(source)
    if source.is_file():
        return source.parent, [source]
    if not source.is_dir():
        raise FileNotFoundError(f"input not found: {source}")
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images found in {source} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return source, files


@dataclass
class RestoredFace:
    """One face of a photo: where it was found, its aligned crop and what the model made of it."""

    box: torch.Tensor  # (4,) x0, y0, x1, y1 in photo pixels
    probability: float
    points: torch.Tensor  # (5, 2) the detector's five points
    matrix: torch.Tensor  # (2, 3) photo -> crop pixels
    crop: torch.Tensor  # (3, S, S) the aligned input
    output: torch.Tensor  # (3, S, S) the restored crop
    i3d: torch.Tensor  # (3, S, S) I_3d
    masks: dict  # AFFB masks of this face {(resolution, block): (C, r, r)}


@dataclass
class RestoredPhoto:
    """A photo with its faces restored and pasted back; ``weight`` ``(1, H, W)`` is where."""

    image: torch.Tensor
    faces: list[RestoredFace] = field(default_factory=list)
    weight: torch.Tensor | None = None


@torch.no_grad()
def restore_photo(module, photo: torch.Tensor, threshold: float | None = None,
                  on_face: Callable[[int, int], None] | None = None) -> RestoredPhoto:
    """Every face of ``photo`` ``(3, H, W)`` in [0, 1] restored by an SGPN module at its own
    resolution and blended back, one face after another (as the release does).
    ``on_face(done, total)`` is told after the detection (0 done) and after each face."""
    faces = detect_faces(photo, FACE_THRESHOLD if threshold is None else threshold)
    result = RestoredPhoto(photo.clone(), weight=torch.zeros(1, *photo.shape[-2:]))
    device = next(module.parameters()).device
    if on_face is not None:
        on_face(0, len(faces))
    for done, face in enumerate(faces, 1):
        crop, matrix = align(photo, face.points, size=module.size)
        restored = module.restore(crop[None].to(device))
        output = restored.output[0].cpu()
        result.image, weight = paste_back(result.image, output, matrix)
        result.weight = torch.maximum(result.weight, weight)
        result.faces.append(RestoredFace(face.box, face.probability, face.points, matrix, crop, output,
                                         restored.i3d[0].cpu(), {k: m[0].cpu() for k, m in restored.masks.items()}))
        if on_face is not None:
            on_face(done, len(faces))
    return result


def save_details(face: RestoredFace, stem: Path) -> list[Path]:
    """The aligned crop, I_3d, the restored crop and the channel-mean AFFB masks of a face."""
    written = []
    for name, image in (("crop", face.crop), ("i3d", face.i3d), ("restored", face.output)):
        written.append(stem.with_name(f"{stem.name}_{name}.png"))
        save_image(image, written[-1])
    for (resolution, block), mask in sorted(face.masks.items()):
        written.append(stem.with_name(f"{stem.name}_mask{resolution}_block{block}.png"))
        save_image(mask.mean(0, keepdim=True), written[-1])
    return written


def restore_photos(module, source: str | os.PathLike, output_dir: str | os.PathLike,
                   threshold: float | None = None, details: bool = False, progress: bool = True) -> dict[str, list]:
    """``sgpn restore``: every photo under ``source`` (a file or a folder) into ``output_dir``
    with ``module`` (an :class:`~sgpn.nets.restorer.SGPNRestorer`, :func:`sgpn.load`). Returns the written results, the photos without a
    face (copied) and the skipped files."""
    input_root, files = input_images(source)
    output_root = Path(output_dir)
    if input_root.resolve() == output_root.resolve():
        raise ValueError("the output folder must differ from the input folder")
    report: dict[str, list] = {"restored": [], "no_face": [], "skipped": []}
    bar = tqdm(files, desc="restoring photos", unit="photo", disable=not progress)
    for path in bar:
        try:
            photo = read_rgb(path)
            restored = restore_photo(module, photo.to(torch.float32), threshold)
        except READ_ERRORS as err:  # unreadable, too small, broken pixels
            report["skipped"].append((path, str(err)))
            tqdm.write(f"skipped {path}: {err}")
            continue
        target = output_path(path, input_root, output_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        save_image(restored.image, target)
        if not restored.faces:
            report["no_face"].append(target)
            tqdm.write(f"{path}: no face found, copied unchanged to {target}")
            continue
        report["restored"].append(target)
        bar.set_postfix(faces=len(restored.faces))
        tqdm.write(f"{path}: {len(restored.faces)} face(s) -> {target}")
        if details:
            for index, face in enumerate(restored.faces):
                save_details(face, target.with_name(f"{target.stem}_face{index}"))
    return report


def restore_folder(module, input_dir: str | os.PathLike, output_dir: str | os.PathLike, batch_size: int = 4,
                   progress: bool = True) -> list[Path]:
    """``sgpn restore --aligned``: every readable face crop under ``input_dir``, resized to the
    model's resolution, into ``output_dir``. Unreadable files are reported and skipped."""
    input_root, files = input_images(input_dir)
    output_root = Path(output_dir)
    if input_root.resolve() == output_root.resolve():
        raise ValueError("the output folder must differ from the input folder")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(module.parameters()).device
    written = []
    for start in tqdm(range(0, len(files), batch_size), desc="restoring", unit="batch", disable=not progress):
        crops, sources = [], []
        for path in files[start:start + batch_size]:
            try:
                crops.append(load_image(path, module.size))
                sources.append(path)
            except READ_ERRORS as err:
                warnings.warn(f"skipped unreadable image {path}: {err}", stacklevel=2)
        if not crops:
            continue
        restored = module.restore(torch.stack(crops).to(device)).output.cpu()
        for image, source in zip(restored, sources):
            target = output_path(source, input_root, output_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            save_image(image, target)
            written.append(target)
    return written
