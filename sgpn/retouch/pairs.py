"""Pairs of retouched and raw faces, for face retouching reversal (:mod:`sgpn.retouch.synthetic_retouch`).

Items are dicts with ``retouched`` (the input) and ``raw`` (the ground truth), both
``(3, S, S)`` in [0, 1], and ``index``:

* :class:`RetouchedFaces`: the kit's synthetic faces and a seeded :class:`~sgpn.retouch.synthetic_retouch.Retouch`
  of each (plus ``params``, the strengths drawn), fully offline and exact;
* :class:`FolderPairs`: two folders holding the same file names, deepFRR's layout
  (:meth:`FolderPairs.deepfrr`: retouched faces under ``deimage/face``, raw ones under
  ``rawimage``, as FRRffusion's data loader pairs them);
* :class:`RetouchDataModule`: either, split into training, validation and test sets, with the
  kit's seeded loaders (:class:`~sgpn.data.datamodule.FaceDataModule`'s, resumable mid-epoch).
"""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from sgpn.checkpoints import load
from sgpn.data.datamodule import SPLITS, FaceDataModule
from sgpn.data.folder import READ_ERRORS, FaceFolder, load_image
from sgpn.data.procedural import derive_seed
from sgpn.paths import resolve_kit_path
from sgpn.retouch.pipeline import fmar_samples
from sgpn.retouch.synthetic_retouch import Retouch


def _plain_index(index) -> int:
    """The kit's training sampler yields ``(index, epoch)``; a pair is the same every epoch."""
    return index[0] if isinstance(index, tuple) else index


class RetouchedFaces(Dataset):
    """Faces from ``faces`` (items with ``hq``, ``landmarks``, ``face_mask`` and
    ``occluder_mask``, as :class:`~sgpn.data.synthetic.SyntheticFaces` gives them), each retouched by
    ``retouch`` with a generator seeded by ``(seed, index)``: the same pair every time.
    ``cache``: keep each retouched face after it is first made (retouching a face costs about as
    much as the coarse stage's training step spends on it)."""

    def __init__(self, faces: Dataset, retouch: Retouch | None = None, seed: int = 0, cache: bool = False):
        self.faces, self.retouch, self.seed = faces, retouch or Retouch(), int(seed)
        self.cache: dict[int, tuple[torch.Tensor, dict]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, index: int) -> dict:
        index = _plain_index(index)
        face = self.faces[index]
        missing = {"hq", "landmarks", "face_mask"} - set(face)
        if missing:
            raise KeyError(f"retouching needs a face's {sorted(missing)}; {type(self.faces).__name__} gives {sorted(face)}")
        if self.cache is not None and index in self.cache:
            image, params = self.cache[index]
        else:
            occluder = face.get("occluder_mask")
            retouched = self.retouch(face["hq"][None], face["landmarks"][None], face["face_mask"][None],
                                     None if occluder is None else occluder[None],
                                     generator=derive_seed(self.seed, "retouch", face.get("index", index)))
            image, params = retouched.image[0], retouched.params[0]
            if self.cache is not None:
                self.cache[index] = image, params
        return {"retouched": image.clone(), "raw": face["hq"], "params": dict(params), "index": face.get("index", index)}


class FolderPairs(Dataset):
    """Retouched faces in ``retouched_dir`` and their raw versions in ``raw_dir``, paired by
    their path relative to each folder (searched recursively), read as
    :class:`~sgpn.data.folder.FaceFolder` reads faces (RGB, centre-cropped, resized to ``size``).

    A retouched file without a raw partner (or the reverse) is an error that names a few of
    them: a pair silently lost would shift the evaluation."""

    def __init__(self, retouched_dir: str | os.PathLike, raw_dir: str | os.PathLike, size: int = 64):
        self.retouched = FaceFolder(retouched_dir, size, verify=True)
        self.raw = FaceFolder(raw_dir, size, verify=True)
        self.size = int(size)
        retouched = {p.relative_to(self.retouched.root): p for p in self.retouched.files}
        raw = {p.relative_to(self.raw.root): p for p in self.raw.files}
        for name, only in (("raw partner", sorted(set(retouched) - set(raw))),
                           ("retouched partner", sorted(set(raw) - set(retouched)))):
            if only:
                shown = ", ".join(str(p) for p in only[:3]) + (", ..." if len(only) > 3 else "")
                raise ValueError(f"{len(only)} image(s) have no {name} of the same name: {shown} "
                                 f"(retouched: {self.retouched.root}, raw: {self.raw.root})")
        self.pairs = [(retouched[key], raw[key]) for key in sorted(retouched)]

    @classmethod
    def deepfrr(cls, root: str | os.PathLike, size: int = 64) -> "FolderPairs":
        """deepFRR's layout under ``root``: ``deimage/face`` (retouched) and ``rawimage`` (raw)."""
        root = Path(root)
        return cls(root / "deimage" / "face", root / "rawimage", size)

    def subset(self, indices: list[int]) -> "FolderPairs":
        """These pairs at ``indices``, in that order."""
        part = copy.copy(self)
        part.pairs = [self.pairs[i] for i in indices]
        return part

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return f"FolderPairs({str(self.retouched.root)!r}, {str(self.raw.root)!r}, size={self.size}, {len(self)} pairs)"

    def __getitem__(self, index: int) -> dict:
        index = _plain_index(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} pairs")
        index = index % len(self)
        retouched, raw = self.pairs[index]
        try:
            return {"retouched": load_image(retouched, self.size), "raw": load_image(raw, self.size),
                    "index": index, "path": str(retouched)}
        except READ_ERRORS as err:
            raise OSError(f"could not decode the pair {retouched} / {raw}: {err}") from err


class WithCoarse(Dataset):
    """``pairs`` with ``coarse`` added to each item: a given ``(N, 3, s, s)`` image per pair, in
    the pairs' order (FMAR's samples, :func:`sgpn.retouch.pipeline.fmar_samples`)."""

    def __init__(self, pairs: Dataset, coarse: torch.Tensor):
        if len(coarse) != len(pairs):
            raise ValueError(f"{len(coarse)} coarse faces for {len(pairs)} pairs")
        self.pairs, self.coarse = pairs, coarse

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index) -> dict:
        position = _plain_index(index)
        return {**self.pairs[index], "coarse": self.coarse[position]}


def collate_pairs(items: list[dict]) -> dict:
    """Stack every key as ``default_collate`` does, but keep ``params`` as a list of dicts."""
    batch = default_collate([{k: v for k, v in item.items() if k != "params"} for item in items])
    if "params" in items[0]:
        batch["params"] = [item["params"] for item in items]
    return batch


class RetouchDataModule(FaceDataModule):
    """Retouched/raw pairs for training, validation and test.

    ``source``: ``"synthetic"`` (the kit's synthetic faces, the same splits and pre-render
    cache as :class:`~sgpn.data.datamodule.FaceDataModule`, each face retouched by a
    :class:`~sgpn.retouch.synthetic_retouch.Retouch` with ``retouch``'s strength ranges), or a folder: deepFRR's
    layout (``deimage/face`` and ``rawimage``) or ``retouched`` and ``raw`` subfolders, split by
    a fixed shuffle into ``val_length``, ``test_length`` and the rest for training. ``seed``
    drives the training faces and their order; validation and test do not depend on it.

    ``coarse_from``: an FMAR checkpoint; the training and validation pairs then carry FMAR's
    sample of each retouched face (``coarse``), drawn once before training (with a progress
    bar) and kept in ``cache_dir``, for HFDG to train on what it gets at inference.
    """

    def __init__(self, source: str = "synthetic", size: int = 64, batch_size: int = 16,
                 train_length: int = 4000, val_length: int = 32, test_length: int = 256,
                 retouch: dict | None = None, num_workers: int = 0, seed: int = 0,
                 cache_dir: str | None = None, coarse_from: str | None = None):
        super().__init__(source=source, size=size, batch_size=batch_size, train_length=train_length,
                         val_length=val_length, test_length=test_length, num_workers=num_workers,
                         seed=seed, cache=True, cache_dir=cache_dir)
        self.retouch = Retouch(**(retouch or {}))
        self.coarse_from = coarse_from

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.datasets = self._pair_splits()
        if self.coarse_from is not None:
            for split in ("train", "val"):
                self.datasets[split] = WithCoarse(self.datasets[split], self._coarse(split))

    def _coarse(self, split: str) -> torch.Tensor:
        """FMAR's samples of a split, read from ``cache_dir`` when a file there matches the
        checkpoint and the pairs (named by a hash of both), else drawn and written."""
        path = resolve_kit_path(self.coarse_from)
        pairs = self.datasets[split]
        fingerprint = hashlib.sha1(path.read_bytes())
        for index in {0, len(pairs) - 1}:
            fingerprint.update(pairs[index]["retouched"].numpy().tobytes())
        file = (Path(self.cache_dir) / f"fmar-samples-{split}-{len(pairs)}-{fingerprint.hexdigest()[:12]}.pt"
                if self.cache_dir is not None else None)
        if file is not None and file.is_file():
            return torch.load(file, weights_only=True)
        samples = fmar_samples(load(path), pairs, seed=derive_seed(self.seed, "coarse", split))
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            torch.save(samples, file)
        return samples

    def _pair_splits(self) -> dict[str, Dataset]:
        if self.source == "synthetic":
            faces = self._synthetic_splits()
            return {split: RetouchedFaces(faces[split], self.retouch,
                                          derive_seed(self.seed if split == "train" else 0, "retouch", split),
                                          cache=True)
                    for split in SPLITS}
        root = Path(self.source)
        pairs = (FolderPairs.deepfrr(root, self.size) if (root / "deimage" / "face").is_dir()
                 else FolderPairs(root / "retouched", root / "raw", self.size))
        held_out = self.lengths["val"] + self.lengths["test"]
        if len(pairs) <= held_out:
            raise ValueError(f"{root} holds {len(pairs)} pairs: too few for val_length={self.lengths['val']} + "
                             f"test_length={self.lengths['test']} and a training set")
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(derive_seed(0, "pair split")))
        ends = {"val": self.lengths["val"], "test": held_out}
        return {"val": pairs.subset(order[:ends["val"]].tolist()),
                "test": pairs.subset(order[ends["val"]:held_out].tolist()),
                "train": pairs.subset(order[held_out:].tolist())}

    def _loader(self, split: str, **kwargs) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.batch_size, num_workers=self.num_workers,
                          collate_fn=collate_pairs, persistent_workers=self.num_workers > 0, **kwargs)
