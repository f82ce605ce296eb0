"""The fitted 68 landmarks against dlib's iBUG 300-W annotator, and the five-point baseline."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from conftest import GRACE_HOPPER, SHARED
from PIL import Image

from sgpn.data.folder import read_rgb
from sgpn.evaluation import annotator as annotator_module
from sgpn.evaluation.annotator import Annotator, five_point_landmarks, jaw_offset, landmark_check, proportions
from sgpn.face3d import coefficients
from sgpn.face3d.face_model import load_face_model
from sgpn.face3d.fitting import five_points
from sgpn.photo.detection import detect_faces

pytest.importorskip("dlib", reason="the annotator needs dlib-bin (the test extra installs it)")


@pytest.fixture(scope="module")
def annotator():
    return Annotator()


def _similarity(points: torch.Tensor, scale: float, degrees: float, shift: tuple[float, float]) -> torch.Tensor:
    angle = math.radians(degrees)
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=torch.float64)
    return scale * points @ rotation.T + torch.tensor(shift, dtype=torch.float64)


def test_five_points_alone_carry_the_mean_face_along_with_them():
    face_model = load_face_model()
    mean = face_model.landmarks_2d(torch.zeros(1, coefficients.NUM_COEFFS), 224)[0].double()
    moved = _similarity(mean, 2.5, 12.0, (40.0, -7.0))
    result = five_point_landmarks(face_model, five_points(moved[None])[0])
    torch.testing.assert_close(result, moved, atol=1e-6, rtol=0)
    torch.testing.assert_close(proportions(moved[None]), proportions(mean[None]))


def test_the_jaw_offset_is_read_in_the_frame_of_the_annotated_eyes():
    annotated = _similarity(torch.rand(68, 2, dtype=torch.float64) * 100, 1.0, 30.0, (5.0, 5.0))
    eyes = annotated[45] - annotated[36]
    down_the_face = torch.stack([-eyes[1], eyes[0]])  # the eye line turned by +90° (y is down)
    predicted = annotated - 0.1 * down_the_face
    torch.testing.assert_close(jaw_offset(predicted, annotated), torch.tensor([0.0, 0.1], dtype=torch.float64))


def test_the_annotator_marks_the_portrait_s_eyes_where_mtcnn_finds_them(annotator):
    photo = read_rgb(GRACE_HOPPER).float()
    face = detect_faces(photo)[0]
    elsewhere = torch.tensor([0.0, 0.0, 40.0, 40.0])
    points, nothing = annotator(photo, torch.stack([face.box, elsewhere]))
    assert points.shape == (68, 2) and nothing is None
    eyes = torch.stack([points[36:42].mean(0), points[42:48].mean(0)])
    distance = (eyes - face.points[:2].double()).norm(dim=-1)
    assert (distance < 0.15 * (points[45] - points[36]).norm()).all(), distance
    assert annotator(torch.full((3, 120, 120), 0.5), face.box[None]) == [None]


def test_bad_input_is_named(annotator, monkeypatch):
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        annotator(torch.zeros(1, 64, 64), torch.zeros(1, 4))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(annotator_module.importlib.util, "find_spec",
                        lambda name: None if name == "face_recognition_models" else real_find_spec(name))
    with pytest.raises(ModuleNotFoundError, match="face-recognition-models"):
        Annotator()


def test_the_portrait_s_fit_beats_its_five_points_and_bad_files_are_counted(annotator, tmp_path):
    (tmp_path / "hopper.jpg").write_bytes(GRACE_HOPPER.read_bytes())
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    Image.new("RGB", (160, 160), (128, 128, 128)).save(tmp_path / "wall.png")
    check = landmark_check(load_face_model(), tmp_path, annotator=annotator)
    assert (check["photos"], check["faces"], check["annotated"]) == (2, 1, 1)
    assert len(check["skipped"]) == 1 and check["skipped"][0].startswith("broken.jpg")
    fit, baseline = check["rows"]["fit"], check["rows"]["five_points"]
    assert fit["nme"] < 0.08 and fit["nme"] < baseline["nme"] and fit["nme_jaw"] < baseline["nme_jaw"]
    with pytest.raises(ValueError, match="found none of the 0 faces"):
        landmark_check(load_face_model(), tmp_path / "wall.png", annotator=annotator)


@pytest.mark.skipif(not (SHARED / "data" / "real_lq").is_dir(), reason="../shared/data/real_lq is absent")
def test_real_photos_against_the_annotator(annotator):
    """Held out: the fit's settings were chosen on synthetic faces and the portrait, never on these.
    The aim (mean NME 0.07) is not reached; the README says what limits it. This holds the
    measured ground: the fit beats the five points alone on the 51 inner points and overall."""
    check = landmark_check(load_face_model(), SHARED / "data" / "real_lq", annotator=annotator)
    assert check["faces"] == 16 and check["annotated"] >= 12
    fit, baseline = check["rows"]["fit"], check["rows"]["five_points"]
    assert fit["nme"] < baseline["nme"] and fit["nme_inner"] < baseline["nme_inner"]
    assert fit["nme"] < 0.12, fit
