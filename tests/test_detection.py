"""MTCNN from the facenet-pytorch wheel, with the kit's torch: faces and five points in real
photos, and clear errors for what cannot hold a face."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from conftest import SHARED
from PIL import Image

from sgpn.nets.shape_prior import template_points
from sgpn.photo.alignment import align
from sgpn.photo.detection import detect_faces

GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
REAL_LQ = SHARED / "data" / "real_lq"


def read(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255


def test_the_portrait_that_ships_with_matplotlib_has_one_face_with_ordered_points():
    faces = detect_faces(read(GRACE_HOPPER))
    assert len(faces) == 1 and faces[0].probability > 0.99
    eyes, nose, mouth = faces[0].points[:2], faces[0].points[2], faces[0].points[3:]
    assert eyes[0, 0] < eyes[1, 0] and mouth[0, 0] < mouth[1, 0]  # left before right, as seen
    assert eyes[:, 1].max() < nose[1] < mouth[:, 1].min()  # eyes above the nose above the mouth
    x0, y0, x1, y1 = faces[0].box
    assert ((faces[0].points[:, 0] > x0) & (faces[0].points[:, 0] < x1)).all()
    crop, matrix = align(read(GRACE_HOPPER), faces[0].points, size=128)
    assert crop.shape == (3, 128, 128)
    residual = (faces[0].points @ matrix[:, :2].T + matrix[:, 2] - torch.from_numpy(template_points(128))).norm(dim=1)
    assert residual.max() < 10  # a real face fits the template to a few pixels at 128 px


def test_photos_too_small_or_broken_are_refused_clearly():
    with pytest.raises(ValueError, match="1x1 px: too small to hold a face"):
        detect_faces(torch.rand(3, 1, 1))
    with pytest.raises(ValueError, match="RGB"):
        detect_faces(torch.rand(1, 64, 64))
    with pytest.raises(ValueError, match="NaN"):
        detect_faces(torch.full((3, 64, 64), float("nan")))
    assert detect_faces(torch.full((3, 64, 64), 0.5)) == []  # a flat grey photo has no face


@pytest.mark.skipif(not REAL_LQ.is_dir(), reason="../shared/data/real_lq is not beside the kit")
def test_every_real_photo_yields_its_faces():
    photos = sorted(p for p in REAL_LQ.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    counts = {p.name: len(detect_faces(read(p))) for p in photos}
    assert len(photos) == 12 and all(n >= 1 for n in counts.values()), counts
    assert sum(counts.values()) == 16, counts
