"""Five-point alignment and paste-back: the fitted similarity, the crop and the seamless blend."""

from __future__ import annotations

import math

import pytest
import torch

from sgpn.nets.shape_prior import invert_similarity as invert
from sgpn.nets.shape_prior import template_points
from sgpn.photo.alignment import align, paste_back, paste_mask, similarity_matrix


def rotation(angle: float, scale: float, shift: tuple[float, float]) -> torch.Tensor:
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    return torch.tensor([[c, -s, shift[0]], [s, c, shift[1]]], dtype=torch.float64)


def apply(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_umeyama_recovers_a_similarity_and_fits_noisy_points_best():
    truth = rotation(0.3, 0.7, (12.0, -5.0))
    source = torch.from_numpy(template_points(512))
    fitted = similarity_matrix(source, apply(truth, source))
    torch.testing.assert_close(fitted, truth)
    noisy = apply(truth, source) + torch.tensor([[1.0, 0], [0, -1], [0.5, 0.5], [-1, 0], [0, 1]], dtype=torch.float64)
    best = similarity_matrix(source, noisy)
    residual = (apply(best, source) - noisy).pow(2).sum()
    for nudge in (rotation(0.01, 1.0, (0, 0)), rotation(0.0, 1.01, (0, 0)), rotation(0, 1.0, (0.5, 0))):
        worse = torch.cat([nudge[:, :2] @ best[:, :2], (nudge[:, :2] @ best[:, 2:] + nudge[:, 2:])], 1)
        assert (apply(worse, source) - noisy).pow(2).sum() > residual
    torch.testing.assert_close(apply(invert(truth), apply(truth, source)), source)


def test_mirrored_points_give_a_rotation_not_a_reflection():
    source = torch.from_numpy(template_points(512))
    mirrored = source * torch.tensor([-1.0, 1.0], dtype=torch.float64)
    assert torch.det(similarity_matrix(source, mirrored)[:, :2]) > 0


@pytest.mark.parametrize("points, message", [
    (torch.zeros(5, 2), "coincide"), (torch.full((5, 2), math.nan), "NaN"), (torch.zeros(5, 3), "point sets")])
def test_bad_points_are_refused(points, message):
    with pytest.raises(ValueError, match=message):
        similarity_matrix(points, torch.from_numpy(template_points(512)) if points.shape[1] == 2 else points)


def test_crop_places_the_points_on_the_template_and_paste_back_leaves_the_rest_alone():
    photo = torch.rand(3, 150, 200, generator=torch.Generator().manual_seed(0))
    truth = rotation(-0.2, 0.25, (40.0, 20.0))  # template (crop of 128) -> photo
    points = apply(truth, torch.from_numpy(template_points(128)))
    crop, matrix = align(photo, points, size=128)
    torch.testing.assert_close(apply(matrix, points), torch.from_numpy(template_points(128)), atol=1e-6, rtol=0)
    # a crop pixel shows the photo pixel the matrix sends it from
    x, y = 64, 70
    source = apply(invert(matrix), torch.tensor([[x, y]], dtype=torch.float64))[0].round().long()
    assert (crop[:, y, x] - photo[:, source[1], source[0]]).abs().max() < 0.35  # bicubic on noise
    blended, weight = paste_back(photo, torch.zeros_like(crop), matrix)
    untouched = weight[0] == 0
    assert untouched.float().mean() > 0.5 and torch.equal(blended[:, untouched], photo[:, untouched])
    assert weight.max() == pytest.approx(1.0, abs=1e-3)
    centre = apply(truth, torch.tensor([[64.0, 64.0]], dtype=torch.float64))[0].round().long()
    assert blended[:, centre[1], centre[0]].abs().max() < 1e-3  # the crop's black replaced the face


def test_paste_mask_is_feathered():
    mask = paste_mask(512)[0]
    assert mask[256, 256] == pytest.approx(1.0, abs=1e-4) and mask[0, 0] < 1e-4
    profile = mask[256, :60]
    assert (profile[1:] >= profile[:-1] - 1e-6).all()  # rises smoothly across the border
    assert (profile[1:] - profile[:-1]).max() < 0.1
