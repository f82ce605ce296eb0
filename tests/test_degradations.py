"""Degradations: shapes, seeds, parameter ranges, real JPEG, exact SR, inpainting masks, errors."""

from __future__ import annotations

import json
import math

import kornia
import numpy as np
import pytest
import torch
from PIL import Image

from sgpn.data.degradations import (DEGRADATIONS, BlindDegradation, InpaintingMask, SuperResolution, build_degradation,
                                    describe, gaussian_kernels, jpeg)

SIZE = 64


def smooth_faces(batch: int = 3, size: int = SIZE) -> torch.Tensor:
    """Smooth colourful images (gradients and a blob) in [0.1, 0.9]: compressible like photos."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = []
    for i in range(batch):
        blob = torch.exp(-((x - 0.3 - 0.2 * i) ** 2 + (y - 0.5) ** 2) / 0.05)
        images.append(torch.stack([0.5 * x + 0.4 * blob, 0.3 + 0.4 * y * blob, 0.6 - 0.4 * x * y]))
    return (torch.stack(images) * 0.8 + 0.1).clamp(0, 1)


ONLY = dict(sigma=None, downscale=None, noise=None, jpeg_quality=None)  # every blind step off


@pytest.mark.parametrize("name", DEGRADATIONS)
def test_shapes_ranges_and_params(name):
    hq = smooth_faces()
    out = build_degradation(name)(hq, generator=0)
    assert out.lq.shape == hq.shape and out.lq.dtype == hq.dtype
    assert 0.0 <= out.lq.min() and out.lq.max() <= 1.0
    assert not torch.equal(out.lq, hq)
    assert len(out.params) == len(hq)
    json.dumps(out.params)  # JSON-friendly
    assert describe(out.params[0]) != "no degradation"
    assert (out.mask is not None) == (name == "inpaint")


@pytest.mark.parametrize("name", ["blind", "inpaint"])
def test_same_seed_same_output_and_different_seeds_differ(name):
    hq = smooth_faces()
    degradation = build_degradation(name)
    a, b = degradation(hq, generator=7), degradation(hq, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.lq, b.lq) and a.params == b.params
    c = degradation(hq, generator=8)
    assert not torch.equal(a.lq, c.lq) and a.params != c.params
    torch.manual_seed(3)
    d = degradation(hq)
    torch.manual_seed(3)
    assert torch.equal(d.lq, degradation(hq).lq)  # None: torch's global generator


@pytest.mark.parametrize("name", ["blind", "inpaint"])
def test_per_image_seeds_match_single_image_calls(name):
    hq = smooth_faces()
    degradation = build_degradation(name)
    batch = degradation(hq, generator=[11, 12, 13])
    for i, seed in enumerate([11, 12, 13]):
        single = degradation(hq[i : i + 1], generator=seed)
        assert torch.allclose(batch.lq[i], single.lq[0], atol=1 / 255)
        assert batch.params[i] == single.params[0]
    with pytest.raises(ValueError, match="2 generators/seeds for a batch of 3"):
        degradation(hq, generator=[1, 2])


def test_blind_params_within_default_ranges():
    degradation = BlindDegradation()
    hq = smooth_faces(batch=1)
    params = [degradation.draw(torch.Generator().manual_seed(s), SIZE, SIZE) for s in range(300)]
    kinds = [p["blur"] for p in params]
    assert 0.35 < kinds.count("isotropic") / len(kinds) < 0.65
    for p in params:
        assert 0.1 <= p["sigma_x"] <= 10 and 0.1 <= p["sigma_y"] <= 10
        assert -math.pi <= p["rotation"] <= math.pi
        if p["blur"] == "isotropic":
            assert p["sigma_x"] == p["sigma_y"] and p["rotation"] == 0.0
        assert 0.8 <= p["downscale"] <= 8
        assert p["low_size"] == [int(SIZE // p["downscale"])] * 2
        assert 0 <= p["noise"] <= 20
        assert isinstance(p["jpeg_quality"], int) and 60 <= p["jpeg_quality"] <= 100
    assert {p["jpeg_quality"] for p in params} >= {60, 100}  # both ends reachable
    assert degradation(hq, generator=5).params[0] == params[5]


def test_configured_ranges_are_respected():
    degradation = BlindDegradation(sigma=(2.0, 3.0), iso_prob=0.0, downscale=(4.0, 4.0), noise=(5.0, 6.0),
                                   jpeg_quality=(90, 91))
    for p in degradation(smooth_faces(batch=8), generator=0).params:
        assert p["blur"] == "anisotropic" and 2 <= p["sigma_x"] <= 3 and 2 <= p["sigma_y"] <= 3
        assert p["downscale"] == 4.0 and p["low_size"] == [16, 16]
        assert 5 <= p["noise"] <= 6 and p["jpeg_quality"] in (90, 91)
    assert build_degradation("blind", noise=(1.0, 1.0)).noise == (1.0, 1.0)


def test_steps_switched_off_give_8bit_input_back():
    hq = smooth_faces()
    out = BlindDegradation(**{**ONLY, "noise": (0.0, 0.0), "downscale": (1.0, 1.0)})(hq, generator=0)
    assert torch.equal(out.lq, (hq * 255).round() / 255)
    assert out.params[0] == {"downscale": 1.0, "low_size": [SIZE, SIZE], "noise": 0.0}
    assert describe(out.params[0]) == "↓1.0 · noise 0"


def test_noise_sigma_is_on_the_255_scale():
    hq = torch.full((2, 3, 128, 128), 0.5)
    lq = BlindDegradation(**{**ONLY, "noise": (10.0, 10.0)})(hq, generator=0).lq
    assert abs((lq - hq).std().item() * 255 - 10.0) < 0.3


def test_blur_kernels():
    sigma = torch.tensor([1.5, 3.0])
    iso = gaussian_kernels(sigma, sigma, torch.zeros(2), 21)
    reference = kornia.filters.get_gaussian_kernel2d(21, torch.stack([sigma, sigma], -1))
    assert torch.allclose(iso, reference, atol=1e-6)
    assert torch.allclose(iso.sum(dim=(1, 2)), torch.ones(2))
    aniso = gaussian_kernels(torch.tensor([4.0]), torch.tensor([1.0]), torch.tensor([0.0]), 21)
    turned = gaussian_kernels(torch.tensor([4.0]), torch.tensor([1.0]), torch.tensor([math.pi / 2]), 21)
    assert torch.allclose(turned, aniso.transpose(1, 2), atol=1e-6)  # rotation turns the long axis
    assert not torch.allclose(aniso, aniso.transpose(1, 2), atol=1e-3)
    hq = smooth_faces()
    sharp = BlindDegradation(**{**ONLY, "sigma": (0.1, 0.1)})(hq, generator=0).lq
    assert torch.equal(sharp, (hq * 255).round() / 255)  # sigma 0.1 is a delta kernel
    speckle = torch.rand(1, 3, SIZE, SIZE)
    blurred = BlindDegradation(**{**ONLY, "sigma": (5.0, 5.0)})(speckle, generator=0).lq
    assert blurred.std() < 0.2 * speckle.std() and (blurred.mean() - speckle.mean()).abs() < 0.01


def test_blur_scales_with_reference_size():
    degradation = BlindDegradation(**{**ONLY, "sigma": (8.0, 8.0)}, reference_size=512)
    assert degradation._blur_scale(64, 64) == (0.125, 5)
    p = degradation(smooth_faces(), generator=0).params[0]
    assert p["sigma_x"] == pytest.approx(1.0)


def test_jpeg_is_a_real_codec():
    image = smooth_faces(batch=1)[0]
    best, worst = jpeg(image, 100), jpeg(image, 10)
    assert torch.equal(best * 255, (best * 255).round())  # decoded 8-bit pixels
    assert (best - image).abs().mean() < 0.01 < (worst - image).abs().mean()
    # Blocking: at low quality, jumps across the 8x8 block borders exceed jumps inside blocks.
    jumps = (worst - image).diff(dim=-1).abs().mean(dim=(0, 1))
    border, inside = jumps[7::8].mean(), torch.cat([jumps[i::8] for i in range(7)]).mean()
    assert border > 1.5 * inside
    only_jpeg = BlindDegradation(**{**ONLY, "jpeg_quality": (30, 30)})(image[None], generator=0)
    assert torch.equal(only_jpeg.lq[0], jpeg(image, 30)) and only_jpeg.params == [{"jpeg_quality": 30}]


def _pil_bicubic(image: torch.Tensor, size: int) -> torch.Tensor:
    channels = [Image.fromarray(c.numpy(), mode="F").resize((size, size), Image.BICUBIC) for c in image]
    return torch.from_numpy(np.stack([np.asarray(c) for c in channels]))


@pytest.mark.parametrize("scale", [4, 8, 16])
def test_super_resolution_is_a_bicubic_round_trip(scale):
    hq = torch.rand(2, 3, SIZE, SIZE)
    out = build_degradation(f"sr{scale}")(hq)
    assert out.params == [{"scale": scale, "low_size": [SIZE // scale] * 2}] * 2
    for image, lq in zip(hq, out.lq):  # PIL's bicubic, independently
        expected = _pil_bicubic(_pil_bicubic(image, SIZE // scale), SIZE).clamp(0, 1)
        assert torch.allclose(lq, expected, atol=1e-5)
    with pytest.raises(ValueError, match="not divisible by the SR scale 16"):
        SuperResolution(16)(torch.rand(1, 3, 40, 40))
    with pytest.raises(ValueError, match="scale must be an int >= 2"):
        SuperResolution(1)


def test_inpainting_masks():
    hq = smooth_faces(batch=1, size=128)
    degradation = InpaintingMask(fill=0.25)
    coverage = []
    for seed in range(40):
        out = degradation(hq, generator=seed)
        mask = out.mask
        assert mask.shape == (1, 1, 128, 128) and set(mask.unique().tolist()) <= {0.0, 1.0}
        keep = mask.expand_as(hq) == 0
        assert torch.equal(out.lq[keep], hq[keep]) and (out.lq[~keep] == 0.25).all()
        assert out.params[0]["coverage"] == pytest.approx(mask.mean().item())
        coverage.append(out.params[0]["coverage"])
    assert 0.005 < min(coverage) and max(coverage) < 0.6 and 0.05 < np.mean(coverage) < 0.35
    boxes_only = InpaintingMask(strokes=(0, 0), boxes=(1, 1), box_size=(0.5, 0.5))(hq, generator=0)
    assert boxes_only.params[0]["coverage"] == pytest.approx(0.25)
    assert describe(boxes_only.params[0]) == "0 strokes, 1 box, 25% missing"


def test_bad_input_is_named():
    degradation = BlindDegradation()
    good = smooth_faces(batch=1)
    cases = [
        (good[0], "shape \\(B, 3, H, W\\)"),
        (good[:, :1], "3 colour channels"),
        ((good * 255).to(torch.uint8), "floating-point"),
        (good.masked_fill(good > 0.5, float("nan")), "NaN"),
        (good * 2, "must hold values in \\[0, 1\\]"),
        (good - 0.5, "must hold values in \\[0, 1\\]"),
    ]
    for images, message in cases:
        for module in (degradation, SuperResolution(4), InpaintingMask()):
            with pytest.raises((ValueError, TypeError), match=message):
                module(images, generator=0)
    with pytest.raises(TypeError, match="generator must be"):
        degradation(good, generator="seed")
    with pytest.raises(ValueError, match="41-tap blur kernel needs images larger than 20 px"):
        degradation(torch.rand(1, 3, 16, 16), generator=0)


def test_bad_configuration_is_named():
    for kwargs, message in [
        (dict(kernel_size=40), "kernel_size must be a positive odd int"),
        (dict(sigma=(3.0, 1.0)), "sigma must satisfy"),
        (dict(downscale=(0.0, 2.0)), "downscale must satisfy"),
        (dict(noise=(-1.0, 2.0)), "noise must satisfy"),
        (dict(jpeg_quality=(50, 101)), "jpeg_quality must satisfy"),
        (dict(jpeg_quality=(50.0, 90.0)), "pair of ints"),
        (dict(iso_prob=1.5), "iso_prob"),
    ]:
        with pytest.raises(ValueError, match=message):
            BlindDegradation(**kwargs)
    with pytest.raises(ValueError, match="at least 2 vertices"):
        InpaintingMask(vertices=(1, 3))
    with pytest.raises(ValueError, match="unknown degradation 'sr3'"):
        build_degradation("sr3")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", DEGRADATIONS)
def test_cuda_matches_cpu_for_the_same_seed(name):
    hq = smooth_faces()
    degradation = build_degradation(name)
    cpu, cuda = degradation(hq, generator=0), degradation(hq.cuda(), generator=0)
    assert cuda.lq.is_cuda and cpu.params == cuda.params
    assert (cuda.lq.cpu() - cpu.lq).abs().mean() < 1e-3
