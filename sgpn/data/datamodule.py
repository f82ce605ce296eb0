"""The LightningDataModule: HQ faces (synthetic or a folder), degraded on the fly.

Reproducibility is the design constraint. Every random choice about an item (its LQ
degradation, its flip) is drawn from a generator seeded by ``(seed, split, index, epoch)``,
never from a global RNG or from the item's place in a batch, so:

* a training item differs from epoch to epoch, while validation and test items are fixed;
* the training order is a function of ``(seed, epoch)`` (:class:`EpochSampler`);
* a run resumed from a checkpoint sees exactly the data of an uninterrupted run, even when it
  was stopped in the middle of an epoch: the checkpoint stores how far the epoch had got
  (:meth:`FaceDataModule.state_dict`) and the sampler starts there.

The sampler hands each worker ``(index, epoch)`` pairs, so the epoch reaches the items through
the data itself and worker processes (persistent or not) need no shared state. (Lightning's
warning that a mid-epoch checkpoint's "dataloader is not resumable" does not apply here: the
data module, not the loader, carries that state.)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, default_collate

from sgpn.data.degradations import build_degradation
from sgpn.data.folder import FaceFolder
from sgpn.data.procedural import derive_seed
from sgpn.data.synthetic import SyntheticFaces
from sgpn.face3d.face_model import load_face_model

SPLITS = ("train", "val", "test")

#: Synthetic sets are kept in memory after their first pass when they take less than this.
CACHE_BYTES = 1 << 30


class DegradedFaces(Dataset):
    """A face dataset plus ``lq`` (degraded on the fly), ``degradation`` (the parameters drawn),
    ``flipped``, ``epoch`` and, for inpainting, ``inpaint_mask``.

    Keys are ``index`` or ``(index, epoch)``; the generator for an item is seeded by
    ``(seed, split, index, epoch)``. ``flip`` mirrors ``hq`` with probability 1/2 first (only
    for datasets without geometric ground truth: a mirrored synthetic face would no longer
    match its coefficients and landmarks).
    """

    def __init__(self, faces: Dataset, degradation, seed: int, split: str, flip: bool = False):
        self.faces, self.degradation = faces, degradation
        self.seed, self.split, self.flip = seed, split, flip

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, key) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        item = dict(self.faces[index])
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.split, index, epoch))
        flipped = self.flip and bool(torch.rand((), generator=generator) < 0.5)
        if flipped:
            item["hq"] = item["hq"].flip(-1)
        degraded = self.degradation(item["hq"][None], generator=generator)
        item.update(lq=degraded.lq[0], degradation=degraded.params[0], flipped=flipped, epoch=epoch)
        if degraded.mask is not None:
            item["inpaint_mask"] = degraded.mask[0]
        return item


def collate_faces(items: list[dict]) -> dict:
    """Stack every key as ``default_collate`` does, but keep ``degradation`` as a list of
    per-image dicts (their keys differ between images, e.g. isotropic vs anisotropic blur)."""
    batch = default_collate([{k: v for k, v in item.items() if k != "degradation"} for item in items])
    batch["degradation"] = [item["degradation"] for item in items]
    return batch


class EpochSampler(DistributedSampler):
    """A shuffled order per ``(seed, epoch)``, one shard per rank, yielding ``(index, epoch)``.

    ``skip`` drops the first samples of this rank's shard once, for a run resumed in the middle
    of an epoch; ``set_epoch`` to another epoch cancels it. Being a ``DistributedSampler``,
    Lightning uses it as it is under DDP instead of wrapping it.
    """

    def __init__(self, length: int, seed: int, num_replicas: int = 1, rank: int = 0, epoch: int = 0,
                 skip: int = 0):
        super().__init__(range(length), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.epoch, self.skip = epoch, skip

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.skip = 0
        super().set_epoch(epoch)

    def __iter__(self):
        indices = list(super().__iter__())[self.skip:]
        self.skip = 0
        return iter([(index, self.epoch) for index in indices])


class FaceDataModule(lightning.LightningDataModule):
    """HQ faces and their LQ versions for training, validation and test.

    ``source``: ``"synthetic"`` (:class:`~sgpn.data.synthetic.SyntheticFaces`, the default) or
    a folder of aligned faces. A folder with ``train``/``val``/``test`` subfolders uses them
    as the splits; any other folder is split by a fixed shuffle: ``val_length`` images for
    validation, ``test_length`` for test, the rest for training. ``train_length`` sets the size
    of the synthetic training set (a folder's training split is all its remaining images).

    ``seed`` drives the training stream (synthetic faces, order, degradations, flips).
    Validation and test sets do not depend on it, so scores compare across runs.

    ``flip``: horizontal flips of training images (the paper's FFHQ + flips), for folder
    sources only; synthetic items are never flipped, since their coefficients and landmarks
    would no longer match, and a mirrored random face is just another random face.

    Batches are dicts: the dataset's keys stacked (``hq``, ``index``, and ``coeffs``,
    ``landmarks``, ``occluder_mask``, ``face_mask`` for synthetic data or ``path`` for
    folders), plus ``lq``, ``flipped``, ``epoch``, ``inpaint_mask`` for inpainting, and
    ``degradation``: a list of per-image parameter dicts.

    ``cache``: keep synthetic items in memory after they are first drawn (they are the same
    every epoch; only their degradation changes). ``None`` caches a split when it fits in
    1 GiB. Each worker process holds its own cache: use ``num_workers=0`` or persistent
    workers (the default when ``num_workers > 0``). ``cache_dir``: pre-render every synthetic
    split once into this folder (with a progress bar) and read it back in later runs
    (:meth:`~sgpn.data.synthetic.SyntheticFaces.prerender`); runs that share a data setting,
    such as the ablation's, then draw no face at all.
    """

    def __init__(self, source: str = "synthetic", size: int = 64, batch_size: int = 8,
                 train_length: int = 2000, val_length: int = 64, test_length: int = 256,
                 degradation: str = "blind", degradation_kwargs: dict | None = None,
                 num_workers: int = 0, seed: int = 0, flip: bool = True, occluder_prob: float = 0.5,
                 cache: bool | None = None, cache_dir: str | None = None):
        super().__init__()
        for name, value, low in (("size", size, 16), ("batch_size", batch_size, 1),
                                 ("train_length", train_length, 0), ("val_length", val_length, 0),
                                 ("test_length", test_length, 0), ("num_workers", num_workers, 0)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if source != "synthetic" and not Path(source).is_dir():
            raise FileNotFoundError(f"source must be 'synthetic' or a folder of aligned faces; "
                                    f"{source!r} is not a folder")
        self.save_hyperparameters()
        self.source, self.size, self.batch_size = source, int(size), int(batch_size)
        self.lengths = {"train": int(train_length), "val": int(val_length), "test": int(test_length)}
        self.num_workers, self.seed, self.flip = int(num_workers), int(seed), flip
        self.occluder_prob, self.cache, self.cache_dir = occluder_prob, cache, cache_dir
        self.degradation = build_degradation(degradation, **(degradation_kwargs or {}))
        self.datasets: dict[str, DegradedFaces] = {}
        self._resume: dict | None = None  # where a resumed run starts, from a checkpoint

    # -- datasets --------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            faces = self._synthetic_splits() if self.source == "synthetic" else self._folder_splits()
            for split in SPLITS:
                seed = self.seed if split == "train" else 0
                flip = self.flip and split == "train" and self.source != "synthetic"
                self.datasets[split] = DegradedFaces(faces[split], self.degradation, seed, split, flip)
        processes = self.trainer.world_size if self.trainer is not None else 1
        if stage in (None, "fit") and len(self.datasets["train"]) < self.batch_size * processes:
            raise ValueError(f"{len(self.datasets['train'])} training images in {self.source}: fewer than one batch "
                             f"({self.batch_size} per process x {processes} process(es)); add images or lower "
                             f"data.init_args.batch_size")

    def _synthetic_splits(self) -> dict[str, Dataset]:
        model = load_face_model()
        per_item = 5 * self.size**2 + 4 * (257 + 136)  # bytes: uint8 image, two bool masks, vectors
        splits = {}
        for split in SPLITS:
            seed = derive_seed(self.seed if split == "train" else 0, "faces", split)
            length = self.lengths[split]
            cache = self.cache if self.cache is not None else length * per_item <= CACHE_BYTES
            splits[split] = SyntheticFaces(self.size, length, seed, model, self.occluder_prob, cache=cache)
            if self.cache_dir is not None and length:
                splits[split].prerender(self.cache_dir)
        return splits

    def _folder_splits(self) -> dict[str, Dataset]:
        root = Path(self.source)
        named = {split: _first_dir(root, names) for split, names in
                 (("train", ("train",)), ("val", ("val", "valid", "validation")), ("test", ("test",)))}
        if named["train"] is not None:  # a prepared folder (sgpn prepare): every split its own
            missing = [split for split, folder in named.items() if folder is None]
            if missing:
                raise FileNotFoundError(f"{root} has a train/ folder but no {' or '.join(missing)}/ folder: "
                                        f"give all three splits, or one folder without a train/ folder")
            splits = {}
            for split in SPLITS:
                try:
                    splits[split] = FaceFolder(named[split], self.size)
                except ValueError as err:
                    raise ValueError(f"the {split} split is empty: {err}") from None
            return splits
        faces = FaceFolder(root, self.size)
        held_out = self.lengths["val"] + self.lengths["test"]
        if len(faces) <= held_out:
            raise ValueError(f"{root} holds {len(faces)} readable images: too few for val_length="
                             f"{self.lengths['val']} + test_length={self.lengths['test']} and a training set")
        order = torch.randperm(len(faces), generator=torch.Generator().manual_seed(derive_seed(0, "folder split")))
        val_end = self.lengths["val"]
        return {"val": Subset(faces, order[:val_end].tolist()),
                "test": Subset(faces, order[val_end:held_out].tolist()),
                "train": Subset(faces, order[held_out:].tolist())}

    # -- loaders ---------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        trainer = self.trainer
        # Start at the right epoch already: with workers, the first indices are drawn as the
        # loader's iterator is created, which Lightning does before it calls ``set_epoch``.
        start = self._resume or {"epoch": trainer.current_epoch if trainer else 0, "skip": 0}
        self._resume = None
        sampler = EpochSampler(len(self.datasets["train"]), derive_seed(self.seed, "order"),
                               num_replicas=trainer.world_size if trainer else 1,
                               rank=trainer.global_rank if trainer else 0, **start)
        return self._loader("train", sampler=sampler, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        self.setup("test")
        return self._loader("test")

    def _loader(self, split: str, **kwargs) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.batch_size, num_workers=self.num_workers,
                          collate_fn=collate_faces, persistent_workers=self.num_workers > 0, **kwargs)

    # -- resuming --------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Where the training epoch had got when a checkpoint is written: the epoch and the
        number of batches already trained in it (Lightning's own progress counters)."""
        trainer = self.trainer
        if trainer is None:
            return {}
        fit = trainer.fit_loop
        epoch = max(fit.epoch_progress.current.started - 1, 0)
        batches = fit.epoch_loop.batch_progress.current.processed
        return {"epoch": epoch, "batches": batches, "batch_size": self.batch_size,
                "complete": batches >= trainer.num_training_batches}

    def load_state_dict(self, state: dict) -> None:
        """Start the next training loader where the checkpointed run stopped."""
        if not state:
            return
        if state["batch_size"] != self.batch_size:
            warnings.warn(f"resuming with batch_size {self.batch_size} instead of {state['batch_size']}: "
                          f"the rest of the interrupted epoch will not match", stacklevel=2)
        if state["complete"]:
            self._resume = {"epoch": state["epoch"] + 1, "skip": 0}
        else:
            self._resume = {"epoch": state["epoch"], "skip": state["batches"] * self.batch_size}


def _first_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)
