"""``sgpn prepare``: raw photos into a training folder of aligned faces, FFHQ-style.

Each photo's faces are found by MTCNN (:mod:`sgpn.photo.detection`) and aligned onto the
release's template by the same five-point similarity and bicubic warp as ``sgpn restore``
(:func:`sgpn.photo.alignment.align`), so that a model trained on the folder sees faces framed
exactly as it will restore them. Crops go to ``OUT/{train,val,test}/<name>.png``; the split is
decided by a hash of the photo's path relative to the input folder, so a photo keeps its split
when photos are added, and faces of one photo never straddle two splits. ``OUT/manifest.jsonl``
holds one line per crop (source photo, face index, box, five points, detector score, split,
file). A re-run reads the manifest and skips photos whose crops are all there.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torchvision.utils import save_image
from tqdm.auto import tqdm

from sgpn.data.folder import READ_ERRORS, read_rgb
from sgpn.photo.alignment import align
from sgpn.photo.detection import FACE_THRESHOLD, detect_faces
from sgpn.photo.restore import input_images

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.jsonl"
#: Faces whose detector box is narrower than this (pixels) are skipped: upsampled to the crop
#: size they would teach the model blur as the target.
MIN_FACE_PX = 64


def split_of(relative: str, fractions: tuple[float, float]) -> str:
    """``train``, ``val`` or ``test`` for a photo's relative path: a SHA-1 bucket in [0, 1)
    compared with the val and test fractions (stable, whatever else is in the folder)."""
    bucket = int(hashlib.sha1(relative.encode()).hexdigest()[:8], 16) / 16**8
    val, test = fractions
    return "test" if bucket < test else "val" if bucket < test + val else "train"


def crop_name(relative: str, face: int) -> str:
    """A flat, unique file name for a face of a photo (``dir/a.jpg`` face 0 -> ``dir__a_0.png``)."""
    return f"{Path(relative).with_suffix('').as_posix().replace('/', '__')}_{face}.png"


@dataclass
class PrepareReport:
    """What a run did: crops written and kept from before, photos without a face, faces too
    small, files that failed to decode (with the reason)."""

    written: list[dict] = field(default_factory=list)
    kept: int = 0
    no_face: list[str] = field(default_factory=list)
    too_small: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    #: faces per split in the folder now (written and kept)
    totals: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{len(self.written)} faces written, {self.kept} kept from before; the folder holds "
                f"{', '.join(f'{self.totals.get(s, 0)} {s}' for s in SPLITS)}; skipped: {self.too_small} faces too "
                f"small, {len(self.no_face)} photos without a face, {len(self.unreadable)} unreadable")


def _read_manifest(path: Path) -> dict[str, list[dict]]:
    by_source: dict[str, list[dict]] = {}
    if path.is_file():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            try:
                record = json.loads(line)
                by_source.setdefault(record["source"], []).append(record)
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{path}, line {number}: not a manifest record ({err})") from None
    return by_source


def _check_output(out: Path) -> None:
    """Refuse an output folder that holds anything but a previous run's splits and manifest."""
    if not out.exists():
        return
    if not out.is_dir():
        raise NotADirectoryError(f"output is not a folder: {out}")
    foreign = [p for p in out.rglob("*") if p.is_file() and not (
        p == out / MANIFEST or (p.parent.parent == out and p.parent.name in SPLITS and p.suffix == ".png"))]
    if foreign:
        raise FileExistsError(f"{out} holds files sgpn prepare did not write ({', '.join(str(p.relative_to(out)) for p in foreign[:3])}"
                              f"{', ...' if len(foreign) > 3 else ''}); choose an empty or new folder")


def prepare_faces(raw: str | os.PathLike, out: str | os.PathLike, size: int = 512, min_face: int = MIN_FACE_PX,
                  threshold: float = FACE_THRESHOLD, fractions: tuple[float, float] = (0.05, 0.05),
                  progress: bool = True) -> PrepareReport:
    """Every face of every photo under ``raw`` aligned into ``out`` at ``size`` px (see the
    module docstring). ``fractions``: the shares of photos that go to val and test."""
    if size < 16:
        raise ValueError(f"size must be at least 16 px, got {size}")
    if not all(0 <= f < 1 for f in fractions) or sum(fractions) >= 1:
        raise ValueError(f"the val and test fractions must be in [0, 1) and leave photos to train on, got {fractions}")
    root, files = input_images(raw)
    out = Path(out)
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise ValueError(f"the output folder {out} must lie outside the photos' folder {root}")
    _check_output(out)
    manifest = _read_manifest(out / MANIFEST)
    report = PrepareReport()
    records = []
    for path in tqdm(files, desc="preparing faces", unit="photo", disable=not progress):
        relative = path.relative_to(root).as_posix()
        previous = manifest.get(relative, [])
        if previous and all((out / r["file"]).is_file() and r["size"] == size for r in previous):
            records += previous
            report.kept += len(previous)
            continue
        try:
            photo = read_rgb(path).to(torch.float32)
            faces = detect_faces(photo, threshold)
        except READ_ERRORS as err:
            report.unreadable.append((relative, str(err)))
            tqdm.write(f"skipped {relative}: {err}")
            continue
        split = split_of(relative, fractions)
        kept_faces = [f for f in faces if float(f.box[2] - f.box[0]) >= min_face]
        report.too_small += len(faces) - len(kept_faces)
        if not faces:
            report.no_face.append(relative)
        for index, face in enumerate(kept_faces):
            crop, _ = align(photo, face.points, size)
            file = f"{split}/{crop_name(relative, index)}"
            (out / split).mkdir(parents=True, exist_ok=True)
            save_image(crop, out / file)
            record = {"source": relative, "face": index, "split": split, "file": file, "size": size,
                      "box": [round(float(v), 2) for v in face.box],
                      "points_5": [[round(float(v), 2) for v in point] for point in face.points],
                      "score": round(face.probability, 5)}
            records.append(record)
            report.written.append(record)
    report.totals = {split: sum(r["split"] == split for r in records) for split in SPLITS}
    if records:
        for split in SPLITS:  # all three, so that a training run finds its splits (or says which is empty)
            (out / split).mkdir(parents=True, exist_ok=True)
        (out / MANIFEST).write_text("".join(json.dumps(r) + "\n" for r in records))
    return report
