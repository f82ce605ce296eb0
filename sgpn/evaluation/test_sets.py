"""Held-out test sets: the synthetic faces degraded for each of the paper's tasks, or a folder
pair of LQ crops and their HQ originals."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from sgpn.data.datamodule import DegradedFaces, FaceDataModule, collate_faces
from sgpn.data.degradations import build_degradation
from sgpn.data.folder import FaceFolder

#: Options of each task's degradation unless a training config gives its own: the kit's models
#: train on GFPGAN's blind ranges with the blur in pixels of a 512 px face (configs/tiny.yaml).
TASK_OPTIONS: dict[str, dict] = {"blind": {"reference_size": 512}}
#: Blind degradations of increasing strength, for the shape-from-LQ comparison.
DEGRADATION_LEVELS: dict[str, dict] = {
    "mild": dict(sigma=(0.1, 3.0), downscale=(0.8, 2.0), noise=(0.0, 5.0), jpeg_quality=(80, 100)),
    "default": {},
    "severe": dict(sigma=(5.0, 10.0), downscale=(4.0, 8.0), noise=(10.0, 20.0), jpeg_quality=(60, 80)),
}


def synthetic_faces(size: int = 64, num_images: int = 256, occluder_prob: float = 0.5):
    """The synthetic held-out faces (undegraded): the fixed test split of
    :class:`~sgpn.data.datamodule.FaceDataModule`, identical for every training seed."""
    data = FaceDataModule(size=size, train_length=0, val_length=0, test_length=num_images,
                          occluder_prob=occluder_prob, cache=True)
    data.setup("test")
    return data.datasets["test"].faces


def degraded_test_set(faces, task: str, degradation_kwargs: dict | None = None,
                      batch_size: int = 64) -> dict[str, torch.Tensor]:
    """``faces`` with their LQ versions for ``task``, stacked into one dict of tensors (and
    ``degradation``: the parameters drawn for each image, for captions).

    The LQ images are those of ``FaceDataModule(degradation=task, degradation_kwargs=...)
    .test_dataloader()``: seeded by (split, index), the same for every method and run.
    ``degradation_kwargs`` default to :data:`TASK_OPTIONS`.
    """
    options = TASK_OPTIONS.get(task, {}) if degradation_kwargs is None else degradation_kwargs
    dataset = DegradedFaces(faces, build_degradation(task, **options), 0, "test")
    batches = list(DataLoader(dataset, batch_size=batch_size, collate_fn=collate_faces))
    test_set = {key: torch.cat([b[key] for b in batches]) for key, value in batches[0].items()
                if isinstance(value, torch.Tensor)}
    test_set["degradation"] = [params for b in batches for params in b["degradation"]]
    return test_set


def folder_pair_test_set(lq_dir: str | os.PathLike, hq_dir: str | os.PathLike, size: int) -> dict:
    """LQ crops and HQ originals matched by relative path without suffix, resized to ``size``.

    Files on one side only are named in the error: a table over a partial pairing would be
    silently wrong.
    """
    sides = {name: FaceFolder(path, size) for name, path in (("lq", lq_dir), ("hq", hq_dir))}
    keys = {name: {Path(f).relative_to(folder.root).with_suffix("").as_posix(): i
                   for i, f in enumerate(folder.files)} for name, folder in sides.items()}
    unmatched = {name: sorted(set(keys[name]) - set(keys[other]))
                 for name, other in (("lq", "hq"), ("hq", "lq"))}
    if any(unmatched.values()):
        detail = "; ".join(f"only in {name}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
                           for name, names in unmatched.items() if names)
        raise ValueError(f"the LQ folder {lq_dir} and the HQ folder {hq_dir} do not pair up by file "
                         f"name ({detail})")
    names = sorted(keys["lq"])
    if not names:
        raise FileNotFoundError(f"no images found in {lq_dir}")
    return {side: torch.stack([sides[side][keys[side][n]]["hq"] for n in names]) for side in ("lq", "hq")}
