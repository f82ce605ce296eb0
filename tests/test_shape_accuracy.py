"""The teacher's loss in face space, and the measures of how well a regressor recovers a face."""

import math

import pytest
import torch

from sgpn.evaluation.shape_accuracy import (BENCH_GROUPS, PART_GROUPS, coefficient_r2, component_moves_px,
                                            group_indices, group_r2, landmark_readout, per_vertex_error,
                                            pose_errors_deg)
from sgpn.face3d import coefficients
from sgpn.face3d.face_model import FaceModel, load_face_model
from sgpn.face3d.morphable import load_bfm
from sgpn.training.losses import FaceSpaceLoss


@pytest.fixture(scope="module")
def open_model():
    return load_face_model("open")


@pytest.fixture(scope="module")
def loss(open_model):
    return FaceSpaceLoss(open_model, frame_size=64)


def test_face_space_loss_is_zero_at_the_truth_and_one_for_the_mean_face(open_model, loss):
    faces = open_model.random_coefficients(256, generator=torch.Generator().manual_seed(7))
    assert all(value.item() < 1e-8 for value in loss(faces, faces).values())
    terms = loss(torch.zeros_like(faces), faces)  # other faces than the normalising ones
    assert set(terms) == set(FaceSpaceLoss.TERMS)
    for name, value in terms.items():
        assert 0.8 < value.item() < 1.25, name


def test_face_space_loss_weighs_what_the_face_shows(open_model, loss):
    """A plain MSE calls all of these errors equal; the face does not."""
    zero = torch.zeros(1, coefficients.NUM_COEFFS)

    def error(index: int, value: float) -> dict[str, float]:
        wrong = zero.clone()
        wrong[0, index] = value
        return {k: v.item() for k, v in loss(wrong, zero).items()}

    id_first, id_last = error(0, 1.0), error(79, 1.0)
    assert id_first["shape"] > 100 * id_last["shape"]  # the basis tail barely moves a vertex
    yaw = error(coefficients.SLICES["angles"].start + 1, 0.25)
    assert yaw["shape"] == yaw["albedo"] == yaw["light"] == 0 and yaw["landmarks"] > 0.2  # pose moves landmarks
    assert yaw["landmarks"] > 100 * id_last["landmarks"]
    light = error(coefficients.SLICES["gamma"].start, 0.1)  # a plain MSE: 100 times less than id 80 off by 1
    assert light["shape"] == light["landmarks"] == light["albedo"] == 0
    assert light["light"] > 10 * sum(id_last.values())
    skin = error(coefficients.SLICES["tex"].start, 1.0)
    assert skin["albedo"] > 100 * error(coefficients.SLICES["tex"].stop - 1, 1.0)["albedo"]


def test_face_space_loss_shape_term_is_the_mean_vertex_distance(open_model, loss):
    generator = torch.Generator().manual_seed(3)
    a, b = (open_model.random_coefficients(3, generator=generator) for _ in range(2))
    raw = loss.raw_terms(a, b)
    meshes = [open_model.compute_shape(p.id, p.exp) for p in map(coefficients.split, (a, b))]
    torch.testing.assert_close(raw["shape"], (meshes[0] - meshes[1]).pow(2).sum(-1).mean(), rtol=1e-3, atol=1e-9)
    albedo = (open_model.compute_albedo(a[:, 144:224]) - open_model.compute_albedo(b[:, 144:224]))
    torch.testing.assert_close(raw["albedo"], albedo.pow(2).sum(-1).mean(), rtol=1e-3, atol=1e-9)


def test_r2_is_one_for_the_truth_and_zero_for_the_average(open_model):
    faces = open_model.random_coefficients(200, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(coefficient_r2(faces, faces)[:254], torch.ones(254))
    average = faces.mean(0, keepdim=True).expand_as(faces)
    r2 = coefficient_r2(average, faces)
    assert r2[:254].abs().max() < 1e-5
    assert torch.isnan(r2[254:]).all()  # random_coefficients draws no translation: nothing to explain
    scores = group_r2(open_model, faces + 0.1 * torch.randn(faces.shape, generator=torch.Generator().manual_seed(1)),
                      faces, PART_GROUPS[:-1])
    assert 0.9 < scores["id10"] < 1 and scores["skin_tone"] > 0.9 and scores["gamma"] < 0.5  # light varies little
    with pytest.raises(ValueError, match="two or more matching faces"):
        coefficient_r2(faces[:1], faces[:1])


def test_groups_follow_the_model_names(open_model, bfm_path):
    groups = group_indices(open_model)
    assert set(groups) == set(PART_GROUPS)
    skin = groups["skin_tone"][0] - coefficients.SLICES["tex"].start
    assert open_model.component_names["tex"][skin].startswith("skin tone")
    assert len(groups["gamma"]) == 12 and len(groups["id10"]) == 10 and len(groups["exp8"]) == 8
    unnamed = FaceModel(load_bfm(bfm_path))
    faces = unnamed.random_coefficients(4)
    with pytest.raises(ValueError, match="skin_tone"):
        group_r2(unnamed, faces, faces, BENCH_GROUPS)


def test_pose_errors_and_per_vertex_error(open_model):
    truth = open_model.random_coefficients(5, generator=torch.Generator().manual_seed(2))
    guess = truth.clone()
    guess[:, coefficients.SLICES["angles"]] += torch.tensor([math.radians(1), math.radians(-3), 0.0])
    torch.testing.assert_close(pose_errors_deg(guess, truth), torch.tensor([1.0, 3.0, 0.0]), rtol=1e-3, atol=1e-3)
    assert per_vertex_error(open_model, guess, truth).abs().max() == 0  # pose is not shape
    guess[:, 0] += 1
    error = per_vertex_error(open_model, guess, truth)
    assert error.shape == (open_model.num_vertices,) and error.max() > 0


def test_landmark_readout_loses_shape_with_landmark_noise(open_model):
    exact = landmark_readout(open_model, 0.0, num_train=1500, num_test=200)
    noisy = landmark_readout(open_model, 0.5, num_train=1500, num_test=200)
    assert exact["nme"] == 0 and exact["vertex_error_ratio"] < 0.45 and exact["r2"]["exp8"] > 0.9
    assert noisy["nme"] > 0.015 and noisy["vertex_error_ratio"] > exact["vertex_error_ratio"] + 0.15


def test_a_wide_depth_range_hides_the_face_size_from_exact_landmarks(open_model):
    wide = ((-0.06, 0.06), (-0.06, 0.06), (-0.6, 0.3))
    kit = landmark_readout(open_model, 0.0, num_train=1500, num_test=200)
    confounded = landmark_readout(open_model, 0.0, num_train=1500, num_test=200, translation_range=wide)
    assert kit["vertex_error_ratio"] < 0.8 * confounded["vertex_error_ratio"]


def test_synthetic_faces_draw_their_coefficients_with_synthetic_coefficients(open_model):
    from sgpn.data.procedural import derive_seed
    from sgpn.data.synthetic import SyntheticFaces, synthetic_coefficients

    faces = SyntheticFaces(size=32, length=2, seed=5, face_model=open_model)
    drawn = synthetic_coefficients(open_model, torch.Generator().manual_seed(derive_seed(5, 1)))
    assert torch.equal(faces[1]["coeffs"], drawn[0])


def test_component_moves_are_the_rms_vertex_move_in_pixels(open_model):
    """One standard deviation of identity 1 and of expression 3, moved vertex by vertex and
    measured in pixels of a 64 px crop, and twice as many pixels at 128 px."""
    from sgpn.face3d import camera
    from sgpn.face3d.face_model import RANDOM_STD

    moves = component_moves_px(open_model, 64, count=4)
    assert moves["id"].shape == moves["exp"].shape == (4,)
    for part, index in (("id", 0), ("exp", 2)):
        delta = torch.zeros(1, coefficients.NUM_COEFFS)
        delta[0, coefficients.SLICES[part].start + index] = RANDOM_STD[part]
        parts = coefficients.split(delta)
        shift = open_model.compute_shape(parts.id, parts.exp) - open_model.mean_shape.view(1, -1, 3)
        rms_px = shift.norm(dim=-1).pow(2).mean().sqrt() / camera.pixel_span(64)
        torch.testing.assert_close(moves[part][index], rms_px, rtol=1e-4, atol=0)
    torch.testing.assert_close(component_moves_px(open_model, 128, count=4)["id"], 2 * moves["id"], rtol=1e-2, atol=0)
    assert moves["id"][0] > moves["id"][3]  # the bases are ordered by size


def test_the_r2_chart_marks_a_clipped_bar_with_its_value():
    from sgpn.app.visualize import grouped_bars

    fig = grouped_bars({"a": {"x": 0.5, "y": -2.3}}, {"x": "x", "y": "y"}, "R²", xlim=(-0.4, 1))
    bars = fig.axes[0].patches
    assert [bar.get_hatch() for bar in bars] == [None, "///"] and bars[1].get_width() == pytest.approx(-0.4)
    assert [text.get_text() for text in fig.axes[0].texts] == ["◀ −2.30"]
