"""Whole-photo restoration: detect, align, restore, paste back, and nothing lost or mixed up."""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from conftest import SHARED
from PIL import Image

from sgpn.checkpoints import load
from sgpn.cli import main
from sgpn.data.folder import read_rgb
from sgpn.photo.restore import restore_photo

KIT_MODEL = Path(__file__).resolve().parents[1] / "kit_checkpoints" / "sgpn_tiny.ckpt"
GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
REAL_LQ = SHARED / "data" / "real_lq"


@pytest.fixture(scope="module")
def model():
    return load(KIT_MODEL)


def check_restored(photo: torch.Tensor, restored) -> None:
    """Same size; untouched away from the faces; no seam: along the blend's border the result
    changes no more from pixel to pixel than the photo and the pasted face do."""
    assert restored.image.shape == photo.shape
    away = restored.weight[0] == 0
    assert torch.equal(restored.image[:, away], photo[:, away])  # (a close-up may leave no such pixel)
    inside = restored.weight[0] > 0
    assert inside.any()
    border = inside & (restored.weight[0] < 1)
    step = (restored.image[:, :, 1:] - restored.image[:, :, :-1]).abs().amax(0)
    own = (photo[:, :, 1:] - photo[:, :, :-1]).abs().amax(0)
    ring = border[:, 1:] | border[:, :-1]
    assert (step[ring] - own[ring]).quantile(0.99) < 0.25


def test_the_portrait_is_restored_in_place(model):
    photo = read_rgb(GRACE_HOPPER)
    restored = restore_photo(model, photo)
    assert len(restored.faces) == 1 and restored.faces[0].crop.shape == (3, 64, 64)
    check_restored(photo, restored)
    assert (restored.weight == 0).float().mean() > 0.5 and not torch.equal(restored.image, photo)


@pytest.mark.skipif(not REAL_LQ.is_dir(), reason="../shared/data/real_lq is not beside the kit")
def test_real_photos_keep_their_size_and_their_background(model):
    faces = 0
    for path in sorted(p for p in REAL_LQ.iterdir() if p.suffix.lower() in (".jpg", ".png")):
        photo = read_rgb(path)
        restored = restore_photo(model, photo)
        faces += len(restored.faces)
        check_restored(photo, restored)
    assert faces == 16


def test_a_folder_with_bad_files_loses_and_mixes_up_nothing(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(GRACE_HOPPER, photos / "a_portrait.jpg")
    (photos / "b_corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    Image.new("RGB", (1, 1), (200, 120, 140)).save(photos / "c_tiny.png")
    Image.new("RGB", (64, 48), (128, 128, 128)).save(photos / "d_no_face.png")
    portrait = Image.open(GRACE_HOPPER)
    portrait.convert("L").save(photos / "e_gray.png")
    portrait.convert("CMYK").save(photos / "f_cmyk.jpg")
    portrait.convert("RGBA").save(photos / "g_alpha.png")
    sixteen = (np.asarray(portrait.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(sixteen).save(photos / "h_16bit.png")
    out = tmp_path / "out"
    assert main(["restore", "--ckpt", str(KIT_MODEL), str(photos), str(out), "--details"]) == 0
    text = capsys.readouterr().out
    assert "teaching model" in text and "trained on synthetic faces" in text and "SGPN_OFFICIAL" in text
    assert "skipped" in text and "b_corrupt.jpg" in text and "c_tiny.png" in text and "too small" in text
    assert "d_no_face.png: no face found, copied unchanged" in text
    written = sorted(p.name for p in out.iterdir() if "_face0_" not in p.name)
    assert written == ["a_portrait.png", "d_no_face.png", "e_gray.png", "f_cmyk.png", "g_alpha.png",
                       "h_16bit.png"]  # nothing under the corrupt or tiny file's name
    assert np.array_equal(np.asarray(Image.open(out / "d_no_face.png")), np.asarray(Image.open(photos / "d_no_face.png")))
    for name in ("a_portrait", "e_gray", "f_cmyk", "g_alpha", "h_16bit"):
        assert Image.open(out / f"{name}.png").size == portrait.size
    assert {p.name for p in out.glob("a_portrait_face0_*")} >= {"a_portrait_face0_crop.png", "a_portrait_face0_i3d.png",
                                                               "a_portrait_face0_restored.png"}
    assert any(p.name.startswith("a_portrait_face0_mask64") for p in out.iterdir())


def write_official_folder(folder: Path, bfm_name: str = "BFM/BFM09_model_info.mat") -> dict[str, Path]:
    """The release's files with random weights: a generator in its format (the tiny config, to
    keep the test small), the D3DFR ResNet-50 as ``{"net_recon": ...}`` and a BFM fixture."""
    from conftest import write_bfm_mat

    from sgpn.nets.generator import SGPNGenerator
    from sgpn.nets.regressor import CoefficientRegressor

    torch.manual_seed(0)
    (folder / Path(bfm_name).parent).mkdir(parents=True, exist_ok=True)
    torch.save(SGPNGenerator("tiny").state_dict(), folder / "sgpn.pth")
    torch.save({"net_recon": CoefficientRegressor().state_dict()}, folder / "d3dfr_finetune_ours.pth")
    write_bfm_mat(folder / bfm_name)
    return {"generator": folder / "sgpn.pth", "regressor": folder / "d3dfr_finetune_ours.pth", "bfm": folder / bfm_name}


@pytest.mark.parametrize("bfm_name", ["BFM/BFM09_model_info.mat", "BFM_model_front.mat"])
def test_official_weights_run_the_release_pipeline(tmp_path, bfm_name):
    from sgpn.face3d.face_model import FaceModel
    from sgpn.face3d.morphable import load_bfm
    from sgpn.nets.generator import SGPNGenerator
    from sgpn.nets.regressor import CoefficientRegressor
    from sgpn.nets.shape_prior import ShapePrior
    from sgpn.photo.official import load_official

    files = write_official_folder(tmp_path, bfm_name)
    official = load_official(tmp_path, generator_config="tiny")
    crop = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    restored = official.restore(crop)
    # the release's pipeline composed by hand from the same files
    generator = SGPNGenerator.from_checkpoint(files["generator"], "tiny").eval()
    prior = ShapePrior(regressor=CoefficientRegressor.from_checkpoint(files["regressor"]).eval(),
                       face_model=FaceModel(load_bfm(files["bfm"]))).eval()
    with torch.no_grad():
        shape = prior(crop * 2 - 1)
        output = generator(crop * 2 - 1, shape.image, shape.coeffs)
    torch.testing.assert_close(restored.i3d, (shape.image + 1) / 2)
    torch.testing.assert_close(restored.output, ((output + 1) / 2).clamp(0, 1))
    with pytest.raises(ValueError, match="works at 64 x 64 px"):
        official.restore(torch.rand(1, 3, 32, 32))


def test_official_folder_must_be_complete(tmp_path):
    from sgpn.photo.official import load_official

    (tmp_path / "sgpn.pth").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="d3dfr_finetune_ours.pth.*BFM09_model_info.mat"):
        load_official(tmp_path)
