"""Fitting the 257 coefficients to faces through the renderer (sgpn.face3d.fitting)."""

from __future__ import annotations

import pytest
import torch

from sgpn.evaluation.metrics import landmark_nme
from sgpn.evaluation.test_sets import degraded_test_set, synthetic_faces
from sgpn.face3d import coefficients
from sgpn.face3d.face_model import load_face_model
from sgpn.face3d.fitting import FitSettings, fit_coefficients, five_points


@pytest.fixture(scope="module")
def faces():
    return degraded_test_set(synthetic_faces(64, 6), "blind")


def test_fitting_finds_the_pose_and_the_landmarks_the_mean_face_misses(faces):
    model = load_face_model()
    images, truth = faces["hq"], faces["coeffs"]
    result = fit_coefficients(model, images, five_points(faces["landmarks"]), settings=FitSettings(steps=40))
    assert len(result.losses) == 40 and result.losses[-1] < 0.7 * result.losses[0]
    landmarks = {name: model.landmarks_2d(c, 64) for name, c in (("fit", result.coeffs), ("mean", torch.zeros_like(truth)))}
    nme = {name: landmark_nme(points, faces["landmarks"]).mean().item() for name, points in landmarks.items()}
    assert nme["fit"] < 0.5 * nme["mean"], nme
    yaw = coefficients.SLICES["angles"].start + 1
    assert (result.coeffs[:, yaw] - truth[:, yaw]).abs().mean() < 0.5 * truth[:, yaw].abs().mean()


def test_the_coarse_phase_moves_only_pose_position_and_light(faces):
    model = load_face_model()
    result = fit_coefficients(model, faces["hq"][:2], five_points(faces["landmarks"][:2]),
                              settings=FitSettings(steps=5, coarse_steps=5))
    parts = coefficients.split(result.coeffs)
    assert parts.id.abs().max() == 0 and parts.exp.abs().max() == 0 and parts.tex.abs().max() == 0
    assert parts.angles.abs().max() > 0 and parts.gamma.abs().max() > 0


def test_bad_input_is_named(faces):
    model = load_face_model()
    points = five_points(faces["landmarks"][:2])
    with pytest.raises(ValueError, match="square RGB"):
        fit_coefficients(model, faces["hq"][:2, :, :, :60], points)
    with pytest.raises(ValueError, match=r"points must be \(B, 5, 2\)"):
        fit_coefficients(model, faces["hq"][:2], points[:, :4])
    with pytest.raises(ValueError, match="NaN"):
        fit_coefficients(model, faces["hq"][:2] * torch.nan, points)


def test_fixed_contour_points_cost_more_the_further_a_face_turns():
    from sgpn.evaluation.shape_accuracy import contour_gap_nme

    model = load_face_model()
    gaps = [contour_gap_nme(model, yaw) for yaw in (0, 30, 45)]
    assert 0 <= gaps[0] < gaps[1] < gaps[2] < 0.1, gaps


def test_two_fits_of_the_same_faces_agree_exactly(faces):
    """The render's backward would otherwise sum in a thread-dependent order, and fits drift."""
    model = load_face_model()
    fits = [fit_coefficients(model, faces["hq"][:3], five_points(faces["landmarks"][:3]),
                             settings=FitSettings(steps=25, coarse_steps=5)).coeffs for _ in range(2)]
    assert torch.equal(*fits)
    assert not torch.are_deterministic_algorithms_enabled()  # the setting is the fit's own
