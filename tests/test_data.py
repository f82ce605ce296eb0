"""Synthetic faces, face folders and the data module: contents, determinism, resuming."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from unittest import mock

import lightning
import numpy as np
import pytest
import torch
from PIL import Image

from sgpn.data.datamodule import EpochSampler, FaceDataModule
from sgpn.data.folder import FaceFolder
from sgpn.data.synthetic import SyntheticFaces
from sgpn.face3d.face_model import load_face_model
from sgpn.face3d.renderer import Renderer

KEYS = {"hq", "coeffs", "landmarks", "occluder_mask", "face_mask", "occluders", "index"}
SMALL_BLUR = {"kernel_size": 7, "sigma": (0.1, 2.0)}  # the 41-tap default needs images over 40 px


@pytest.fixture(scope="module")
def model():
    return load_face_model()


def assert_items_equal(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key, value in first.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, second[key]), key
        else:
            assert value == second[key], key


# -- synthetic faces ---------------------------------------------------------------------------


def test_synthetic_item_keys_shapes_ranges(model):
    item = SyntheticFaces(size=48, length=3, face_model=model)[2]
    assert set(item) == KEYS and item["index"] == 2
    assert item["hq"].shape == (3, 48, 48) and item["hq"].dtype == torch.float32
    assert 0 <= item["hq"].min() and item["hq"].max() <= 1
    assert torch.equal((item["hq"] * 255).round() / 255, item["hq"])  # 8-bit levels, like a photo
    assert item["coeffs"].shape == (257,) and torch.isfinite(item["coeffs"]).all()
    assert item["landmarks"].shape == (68, 2)
    for key in ("occluder_mask", "face_mask"):
        assert item[key].shape == (1, 48, 48) and set(item[key].unique().tolist()) <= {0.0, 1.0}
    assert 0.3 < item["face_mask"].mean() < 0.95
    # not a plain render on black: the background and hair are filled in
    assert item["hq"][:, item["face_mask"][0] == 0].mean() > 0.03


def test_synthetic_is_deterministic_per_index(model):
    first = SyntheticFaces(size=32, length=4, seed=3, face_model=model)
    item = first[1]
    assert_items_equal(item, SyntheticFaces(size=32, length=4, seed=3, face_model=model)[1])
    assert_items_equal(item, first[-3])
    neighbour = first[2]
    assert not torch.equal(item["hq"], neighbour["hq"]) and not torch.equal(item["coeffs"], neighbour["coeffs"])
    other_seed = SyntheticFaces(size=32, length=4, seed=4, face_model=model)[1]
    assert not torch.equal(item["coeffs"], other_seed["coeffs"])


def test_coefficients_and_landmarks_match_the_render(model):
    """The coefficients are exact: rendering them again gives the same landmarks and coverage."""
    dataset = SyntheticFaces(size=64, length=3, seed=5, face_model=model)
    for index in range(3):
        item = dataset[index]
        with torch.no_grad():
            render = Renderer(64, backend="fast")(model(item["coeffs"][None], 64), model.faces)
        torch.testing.assert_close(render.landmarks[0], item["landmarks"])
        assert torch.equal(render.mask[0], item["face_mask"])
        pixels = item["landmarks"].round().long().clamp(0, 63)
        assert item["face_mask"][0, pixels[:, 1], pixels[:, 0]].mean() > 0.85
        eyes, mouth = item["landmarks"][36:48], item["landmarks"][48:68]
        assert eyes[:, 1].mean() < item["landmarks"][30, 1] < mouth[:, 1].mean()


def test_a_synthetic_face_shows_its_size(model):
    """The labels can be read off the image: a face's size in the image follows its size in the
    model (its identity), not a random distance to the camera that would cancel it out."""
    from sgpn.data.synthetic import synthetic_coefficients
    from sgpn.face3d import camera, coefficients

    faces = synthetic_coefficients(model, torch.Generator().manual_seed(0), 256)
    faces[:, coefficients.SLICES["angles"]] = 0  # frontal: no foreshortening
    points = model.landmarks_3d(faces)

    def spread(xy):
        return (xy - xy.mean(1, keepdim=True)).pow(2).sum(-1).mean(1).sqrt().log()

    size, drawn = spread(points[..., :2]), spread(camera.project(points, 64))
    assert (drawn - size).std() < 0.25 * size.std()


def test_occluder_mask_follows_occluder_prob(model):
    always = SyntheticFaces(size=32, length=4, seed=2, face_model=model, occluder_prob=1.0)
    never = SyntheticFaces(size=32, length=4, seed=2, face_model=model, occluder_prob=0.0)
    for index in range(4):
        covered, clear = always[index], never[index]
        assert covered["occluder_mask"].sum() > 0
        assert (covered["occluder_mask"] <= covered["face_mask"]).all()  # only over the face
        assert clear["occluder_mask"].sum() == 0
        assert torch.equal(covered["coeffs"], clear["coeffs"])  # same face underneath
        assert 1 <= covered["occluders"].sum() <= 2 and not clear["occluders"].any()


def test_cache_returns_identical_copies(model):
    cached = SyntheticFaces(size=32, length=2, seed=7, face_model=model, cache=True)
    fresh = SyntheticFaces(size=32, length=2, seed=7, face_model=model)
    first = cached[0]
    first["hq"].zero_()  # a consumer writing into its item must not change the cache
    assert_items_equal(cached[0], fresh[0])


def test_synthetic_rejects_bad_arguments(model):
    with pytest.raises(ValueError, match="size"):
        SyntheticFaces(size=8, face_model=model)
    with pytest.raises(ValueError, match="occluder_prob"):
        SyntheticFaces(occluder_prob=1.5, face_model=model)
    with pytest.raises(IndexError):
        SyntheticFaces(length=2, face_model=model)[2]


# -- face folders ------------------------------------------------------------------------------


def write_faces(folder: Path) -> Path:
    """A folder with a good RGB png, a grayscale png, a 16-bit png, a CMYK jpeg, a
    non-square RGBA webp, a corrupt png and a text file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / "rgb.png")
    Image.fromarray(np.full((20, 20), 90, dtype=np.uint8)).save(folder / "gray.png")
    Image.fromarray(np.full((24, 24), 40000, dtype=np.uint16)).save(folder / "deep.png")
    Image.new("CMYK", (30, 30), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 256, (30, 50, 4), dtype=np.uint8)).save(folder / "wide.webp")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_face_folder_converts_and_skips(tmp_path):
    with pytest.warns(UserWarning) as caught:
        faces = FaceFolder(write_faces(tmp_path / "faces"), size=32)
    messages = " ".join(str(w.message) for w in caught)
    assert "broken.png" in messages and "notes.txt" in messages and "not square" in messages
    names = sorted(Path(p).name for p in faces.files)
    assert names == ["cmyk.jpg", "deep.png", "gray.png", "rgb.png", "wide.webp"]
    items = {Path(faces[i]["path"]).name: faces[i] for i in range(len(faces))}
    for name, item in items.items():
        assert item["hq"].shape == (3, 32, 32) and item["hq"].dtype == torch.float32, name
        assert 0 <= item["hq"].min() and item["hq"].max() <= 1, name
    assert torch.allclose(items["gray.png"]["hq"], torch.full((3, 32, 32), 90 / 255))
    assert torch.allclose(items["deep.png"]["hq"], torch.full((3, 32, 32), 156 / 255))  # 40000 / 257
    red = items["cmyk.jpg"]["hq"].mean((1, 2))
    assert red[0] > 0.8 and red[1] < 0.2 and red[2] < 0.2  # CMYK (0, 255, 255, 0) is red


def test_face_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        FaceFolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no readable images"):
        FaceFolder(tmp_path / "empty")


def test_face_folder_stops_on_an_image_that_fails_to_decode(tmp_path):
    """A truncated JPEG passes the header check; reading it later stops with its name, and no
    other image is handed out in its place."""
    folder = tmp_path / "faces"
    folder.mkdir()
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (folder / "a_truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])
    Image.new("RGB", (16, 16), (0, 0, 255)).save(folder / "b_good.png")
    faces = FaceFolder(folder, size=16)
    assert len(faces) == 2
    with pytest.raises(OSError, match="a_truncated.jpg"):
        faces[0]
    assert Path(faces[1]["path"]).name == "b_good.png"


def test_face_folder_counts_images_of_other_sizes(tmp_path):
    """Mixed sizes are resized, with one warning that counts them."""
    folder = tmp_path / "faces"
    folder.mkdir()
    for name, side in (("a", 32), ("b", 32), ("c", 64), ("d", 48)):
        Image.new("RGB", (side, side), (10, 20, 30)).save(folder / f"{name}.png")
    with pytest.warns(UserWarning, match=r"2 of 4 images are not 32x32 px \(1 at 48x48, 1 at 64x64\)"):
        faces = FaceFolder(folder, size=32)
    assert {faces[i]["hq"].shape for i in range(4)} == {(3, 32, 32)}


# -- the data module ---------------------------------------------------------------------------


def epoch_batches(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_synthetic_batches_change_with_the_epoch_and_validation_does_not():
    data = FaceDataModule(size=48, batch_size=2, train_length=2, val_length=1, test_length=1, seed=1)
    train = data.train_dataloader()
    first, again, later = epoch_batches(train, 0), epoch_batches(train, 0), epoch_batches(train, 1)
    batch = first[0]
    assert KEYS | {"lq", "degradation", "flipped", "epoch"} == set(batch)
    assert batch["hq"].shape == batch["lq"].shape == (2, 3, 48, 48)
    assert batch["coeffs"].shape == (2, 257) and batch["landmarks"].shape == (2, 68, 2)
    assert batch["occluder_mask"].shape == batch["face_mask"].shape == (2, 1, 48, 48)
    assert 0 <= batch["lq"].min() and batch["lq"].max() <= 1 and not torch.equal(batch["lq"], batch["hq"])
    assert len(batch["degradation"]) == 2 and "jpeg_quality" in batch["degradation"][0]
    assert not batch["flipped"].any()  # synthetic faces keep their geometry
    assert batch["epoch"].tolist() == [0, 0] and later[0]["epoch"].tolist() == [1, 1]
    assert torch.equal(batch["index"], again[0]["index"]) and torch.equal(batch["lq"], again[0]["lq"])
    order = [later[0]["index"].tolist().index(i) for i in batch["index"].tolist()]
    assert torch.equal(later[0]["hq"][order], batch["hq"])  # the same faces ...
    assert not torch.equal(later[0]["lq"][order], batch["lq"])  # ... degraded differently
    val = [next(iter(data.val_dataloader())) for _ in range(2)]
    assert torch.equal(val[0]["lq"], val[1]["lq"]) and torch.equal(val[0]["hq"], val[1]["hq"])
    # validation and test sets do not depend on the training seed, and differ from each other
    other = FaceDataModule(size=48, batch_size=2, train_length=2, val_length=1, test_length=1, seed=2)
    assert torch.equal(next(iter(other.val_dataloader()))["lq"], val[0]["lq"])
    assert not torch.equal(next(iter(other.test_dataloader()))["hq"], val[0]["hq"])


def write_folder(root: Path, count: int, size: int = 24) -> Path:
    rng = np.random.default_rng(3)
    root.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        image[:, : size // 2] //= 4  # a dark left half, so that a flip shows
        Image.fromarray(image).save(root / f"{k:03d}.png")
    return root


def test_folder_splits_and_flips(tmp_path):
    data = FaceDataModule(str(write_folder(tmp_path / "flat", 10)), size=16, batch_size=2,
                          val_length=2, test_length=3, degradation="sr4")
    data.setup()
    lengths = {split: len(data.datasets[split]) for split in ("train", "val", "test")}
    assert lengths == {"train": 5, "val": 2, "test": 3}
    paths = [{data.datasets[s][i]["path"] for i in range(n)} for s, n in lengths.items()]
    assert not (paths[0] & paths[1]) and not (paths[0] & paths[2]) and not (paths[1] & paths[2])
    items = [data.datasets["train"][(i, epoch)] for i in range(5) for epoch in range(3)]
    flipped = [item for item in items if item["flipped"]]
    assert 0 < len(flipped) < len(items)
    for item in flipped:  # the dark half moved to the right
        assert item["hq"][:, :, :8].mean() > item["hq"][:, :, 8:].mean()
    assert not any(data.datasets["val"][i]["flipped"] for i in range(2))
    inpaint = FaceDataModule(str(tmp_path / "flat"), size=16, batch_size=2, val_length=2, test_length=3,
                             degradation="inpaint")
    batch = next(iter(inpaint.val_dataloader()))
    assert batch["inpaint_mask"].shape == (2, 1, 16, 16) and len(batch["path"]) == 2
    assert {"hq", "lq", "index", "path", "degradation", "flipped", "epoch"} < set(batch)

    for split in ("train", "val", "test"):
        write_folder(tmp_path / "named" / split, 2)
    named = FaceDataModule(str(tmp_path / "named"), size=16, batch_size=2, degradation="sr4")
    named.setup()
    assert all(len(named.datasets[s]) == 2 for s in ("train", "val", "test"))
    # fewer training images than one batch: an error before training starts (testing is fine)
    small = FaceDataModule(str(tmp_path / "named"), size=16, batch_size=3, degradation="sr4")
    small.setup("test")
    with pytest.raises(ValueError, match="2 training images .* fewer than one batch"):
        small.setup("fit")
    (tmp_path / "named" / "test").rename(tmp_path / "named" / "elsewhere")
    with pytest.raises(FileNotFoundError, match="no test/ folder"):
        FaceDataModule(str(tmp_path / "named"), size=16, batch_size=2).setup()
    (tmp_path / "named" / "test").mkdir()
    with pytest.raises(ValueError, match="the test split is empty"):
        FaceDataModule(str(tmp_path / "named"), size=16, batch_size=2).setup()
    with pytest.raises(ValueError, match="too few"):
        FaceDataModule(str(tmp_path / "flat"), val_length=6, test_length=4).setup()
    with pytest.raises(FileNotFoundError):
        FaceDataModule(str(tmp_path / "nowhere"))


def test_epoch_sampler_shards_and_skips():
    shards = [list(EpochSampler(10, seed=0, num_replicas=2, rank=r, epoch=3)) for r in range(2)]
    indices = [i for shard in shards for i, _ in shard]
    assert sorted(indices) == list(range(10)) and all(e == 3 for s in shards for _, e in s)
    resumed = EpochSampler(10, seed=0, num_replicas=2, rank=1, epoch=3, skip=2)
    assert list(resumed) == shards[1][2:]
    assert list(resumed) == shards[1]  # the skip applies once
    assert [i for i, _ in EpochSampler(10, seed=0, epoch=4)] != [i for i, _ in EpochSampler(10, seed=0, epoch=3)]


class _Recorder(lightning.LightningModule):
    """Trains nothing much; records what every training step saw."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen.append((int(batch["epoch"][0]), batch["index"].tolist(), round(batch["lq"].sum().item(), 4)))
        return (self.weight - batch["lq"].mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(data_root, tmp_path, max_epochs, num_workers, ckpt_path=None, callbacks=()):
    data = FaceDataModule(str(data_root), size=16, batch_size=2, val_length=1, test_length=1,
                          degradation="blind", degradation_kwargs=SMALL_BLUR, num_workers=num_workers)
    module = _Recorder()
    trainer = lightning.Trainer(max_epochs=max_epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                                enable_model_summary=False, limit_val_batches=0, callbacks=list(callbacks),
                                default_root_dir=tmp_path, enable_checkpointing=bool(callbacks))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return module.seen


@pytest.mark.parametrize("stop_after, num_workers", [(5, 0), (8, 0), (6, 1)])
def test_resumed_run_sees_the_same_data(tmp_path, stop_after, num_workers):
    """Stopped after ``stop_after`` steps (4 per epoch: mid-epoch or at an epoch's end) and
    resumed from the checkpoint, a run trains on exactly the batches of an uninterrupted one."""
    root = write_folder(tmp_path / "faces", 10)
    full = fit(root, tmp_path / "full", 3, num_workers)
    assert len(full) == 12 and len({seen[0] for seen in full}) == 3
    saver = lightning.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=stop_after,
                                                        save_top_k=-1)
    first = fit(root, tmp_path / "part", 3, num_workers, callbacks=[saver, _StopAt(stop_after)])
    checkpoint = next((tmp_path / "ckpt").glob("*.ckpt"))
    rest = fit(root, tmp_path / "rest", 3, num_workers, ckpt_path=checkpoint)
    assert first + rest == full


class _StopAt(lightning.Callback):
    """Ends training after a number of steps, like a job killed right after a checkpoint."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.steps:
            trainer.should_stop = True


def test_prerendered_faces_are_read_back_identically(model, tmp_path):
    first = SyntheticFaces(size=32, length=3, seed=7, face_model=model)
    path = first.prerender(tmp_path)
    assert path.is_file() and path.parent == tmp_path and len(first.cache) == 3
    second = SyntheticFaces(size=32, length=3, seed=7, face_model=model)
    with mock.patch.object(SyntheticFaces, "draw", side_effect=AssertionError("drew a face")):
        assert second.prerender(tmp_path) == path
        for index in range(3):
            assert_items_equal(second[index], first[index])
    other = SyntheticFaces(size=32, length=3, seed=8, face_model=model)
    assert other.cache_file(tmp_path) != path  # another seed, another file
