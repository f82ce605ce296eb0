"""``sgpn reconstruct``: every face of a photo fitted, written as JSON with an overlay."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import GRACE_HOPPER, SHARED
from PIL import Image

from sgpn.cli import main
from sgpn.data.folder import read_rgb
from sgpn.face3d import coefficients
from sgpn.face3d.face_model import load_face_model
from sgpn.face3d.fitting import FitSettings, five_points
from sgpn.photo.reconstruct import reconstruct_photo, reconstruct_photos

QUICK = FitSettings(steps=40, coarse_steps=15)


def test_the_portrait_is_fitted_and_its_landmarks_land_in_the_photo():
    photo = read_rgb(GRACE_HOPPER)
    faces = reconstruct_photo(load_face_model(), photo, settings=QUICK)
    assert len(faces) == 1
    face = faces[0]
    assert face.coeffs.shape == (coefficients.NUM_COEFFS,) and torch.isfinite(face.coeffs).all()
    eyes = face.points[1, 0] - face.points[0, 0]
    # the fitted face's five points (from its 68) sit on the detector's, within a fifth of the eye distance
    offset = (five_points(face.landmarks[None])[0] - face.points.float()).norm(dim=-1)
    assert offset.max() < 0.2 * eyes, offset
    x0, y0, x1, y1 = face.box.tolist()
    inside = (face.landmarks[:, 0] > x0 - 0.2 * (x1 - x0)) & (face.landmarks[:, 0] < x1 + 0.2 * (x1 - x0))
    assert inside.all() and (face.landmarks[:, 1] < y1 + 0.3 * (y1 - y0)).all()


def test_a_folder_with_bad_files_is_reported_and_nothing_is_mixed_up(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "hopper.jpg").write_bytes(GRACE_HOPPER.read_bytes())
    (photos / "broken.jpg").write_bytes(GRACE_HOPPER.read_bytes()[:200])
    Image.new("RGB", (12, 12)).save(photos / "tiny.png")
    Image.new("RGB", (200, 160), (100, 150, 210)).save(photos / "sky.png")
    report = reconstruct_photos(load_face_model(), photos, tmp_path / "out", settings=QUICK, progress=False)
    assert [p.name for p in report["written"]] == ["hopper.json"]
    assert [p.name for p in report["no_face"]] == ["sky.png"]
    assert sorted(p.name for p, _ in report["skipped"]) == ["broken.jpg", "tiny.png"]
    records = json.loads((tmp_path / "out" / "hopper.json").read_text())
    assert len(records) == 1 and set(records[0]) == {"box", "points_5", "probability", "coefficients",
                                                     "landmarks_68", "fit_seconds"}
    assert len(records[0]["coefficients"]) == 257 and len(records[0]["landmarks_68"]) == 68
    with Image.open(tmp_path / "out" / "hopper_fit.png") as fit, Image.open(GRACE_HOPPER) as photo:
        assert fit.size == photo.size
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["hopper.json", "hopper_fit.png"]


@pytest.mark.skipif(not (SHARED / "data" / "real_lq").is_dir(), reason="../shared/data/real_lq is not here")
def test_the_command_on_real_low_quality_photos(tmp_path, capsys):
    assert main(["reconstruct", str(SHARED / "data" / "real_lq"), str(tmp_path), "--steps", "30"]) == 0
    assert "12 photo(s) fitted, 0 without a face, 0 skipped" in capsys.readouterr().out
    faces = sum(len(json.loads(p.read_text())) for p in tmp_path.glob("*.json"))
    assert faces == 16
