"""Metrics: known values, input errors, LPIPS without and with local weights, NME and vertex
error. LPIPS runs on randomly initialised backbones written into a temporary cache; FID and KID
are tested with the real Inception in test_inception.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sgpn.evaluation import metrics, perceptual
from sgpn.evaluation.metrics import MetricResult, MetricSuite
from sgpn.face3d import coefficients
from sgpn.face3d.face_model import FaceModel
from sgpn.face3d.morphable import load_bfm


@pytest.fixture(autouse=True)
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache, no weight variables, and any download attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(perceptual.LPIPS_ENV, raising=False)
    hub = tmp_path / "torch_home" / "hub"
    assert Path(torch.hub.get_dir()) == hub, "torch.hub.set_dir was called elsewhere in this process"

    def no_download(url, *args, **kwargs):
        raise AssertionError(f"a metric tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return hub


def put_in_cache(hub: Path, filename: str, state: dict) -> Path:
    path = hub / "checkpoints" / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def squeezenet_state() -> dict:
    import torchvision

    return torchvision.models.squeezenet1_1(weights=None).state_dict()


def images(batch=2, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=generator)


def image_suite(**kwargs) -> MetricSuite:
    return MetricSuite(lpips=False, fid=False, **kwargs)


# -- PSNR and SSIM ------------------------------------------------------------------------------


def test_identical_images_give_infinite_psnr_and_unit_ssim():
    suite = image_suite()
    target = images()
    suite.update(target.clone(), target)
    results = suite.compute()
    assert list(results) == ["psnr", "ssim"]
    assert math.isinf(results["psnr"].value) and results["psnr"].format() == "inf"
    assert results["ssim"].value == pytest.approx(1.0, abs=1e-6)


def test_known_mse_gives_known_psnr_averaged_per_image():
    target = torch.full((2, 3, 16, 16), 0.5)
    output = target.clone()
    output[0] += 0.1  # MSE 1e-2 -> 20 dB
    output[1] += 0.01  # MSE 1e-4 -> 40 dB
    suite = image_suite()
    suite.update(output, target)
    assert suite.compute()["psnr"].value == pytest.approx(30.0, abs=1e-3)


def test_ssim_drops_for_noise():
    target = images(size=48)
    noisy = (target + 0.2 * torch.randn_like(target)).clamp(0, 1)
    suite = image_suite()
    suite.update(noisy, target)
    assert 0 < suite.compute()["ssim"].value < 0.9


@pytest.mark.parametrize("output, message", [
    (images(size=16), "differ in shape"),
    (images().masked_fill(torch.rand(2, 3, 32, 32) < 0.01, float("nan")), "NaN"),
    (images() * 1.5, r"\[0, 1\]"),
    (images() - 0.5, r"\[0, 1\]"),
    (images()[:, :1], "3 colour channels"),
])
def test_bad_images_raise_before_accumulating(output, message):
    suite = image_suite()
    with pytest.raises(ValueError, match=message):
        suite.update(output, images())
    assert suite.num_images == 0
    with pytest.raises(ValueError, match="no images"):
        suite.compute()


def test_integer_images_are_rejected():
    with pytest.raises(TypeError, match="floating-point"):
        image_suite().update((images() * 255).to(torch.uint8), images())


# -- LPIPS without weights -------------------------------------------------------------


def test_without_local_weights_lpips_says_where_to_put_them(offline_hub):
    suite = MetricSuite(fid=False)
    suite.update(images(), images(seed=1))
    results = suite.compute()
    assert list(results) == ["psnr", "ssim", "lpips"]
    lpips = results["lpips"]
    assert lpips.value is None
    assert lpips.reason.startswith("unavailable (no local weights: ")
    assert str(offline_hub / "checkpoints" / "alexnet-owt-7be5be79.pth") in lpips.reason
    assert perceptual.LPIPS_ENV in lpips.reason
    assert metrics.format_results(results)["lpips"] == lpips.reason


def test_explicitly_named_weights_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        perceptual.build_lpips("squeeze", weights=tmp_path / "missing.pth")


def test_corrupt_or_foreign_weights_are_errors(tmp_path, offline_hub):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        perceptual.build_lpips("squeeze", weights=corrupt)
    put_in_cache(offline_hub, perceptual.lpips_weights_file("squeeze"), {"conv.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match="does not hold torchvision's ImageNet SqueezeNet"):
        perceptual.build_lpips("squeeze")
    with pytest.raises(ValueError, match="LPIPS backbone"):
        perceptual.build_lpips("resnet")


# -- LPIPS with injected weights -------------------------------------------------------


def test_lpips_from_the_hub_cache(offline_hub):
    put_in_cache(offline_hub, perceptual.lpips_weights_file("squeeze"), squeezenet_state())
    suite = MetricSuite(lpips_net="squeeze", fid=False)
    target = images(size=64)
    suite.update(target.clone(), target)
    assert suite.compute()["lpips"].value == pytest.approx(0.0, abs=1e-6)
    suite.reset()
    suite.update(images(size=64, seed=1), target)
    value = suite.compute()["lpips"].value
    assert math.isfinite(value) and value > 0


def test_lpips_from_an_explicit_file_leaves_the_hub_alone(tmp_path, offline_hub, monkeypatch):
    weights = tmp_path / "my_squeezenet.pth"
    torch.save(squeezenet_state(), weights)
    monkeypatch.setenv(perceptual.LPIPS_ENV, str(weights))
    lpips = perceptual.build_lpips("squeeze")
    assert Path(torch.hub.get_dir()) == offline_hub and not (offline_hub / "checkpoints").exists()
    value = lpips(images(size=64), images(size=64, seed=1)).item()
    assert math.isfinite(value) and value > 0


def test_lpips_from_an_explicit_file_when_the_hub_dir_is_pinned(tmp_path, monkeypatch):
    pinned = tmp_path / "pinned_hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(pinned))  # as torch.hub.set_dir leaves it
    weights = tmp_path / "my_squeezenet.pth"
    torch.save(squeezenet_state(), weights)
    assert math.isfinite(perceptual.build_lpips("squeeze", weights)(images(size=64), images(size=64)).item())
    assert torch.hub.get_dir() == str(pinned) and not pinned.exists()


# -- landmark NME ------------------------------------------------------------------------------


def landmark_set(batch=2, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(batch, 68, 2, generator=generator) * 100
    points[:, 36] = torch.tensor([30.0, 50.0])
    points[:, 45] = torch.tensor([70.0, 50.0])  # inter-ocular distance 40
    return points


def test_nme_is_zero_for_identical_landmarks():
    points = landmark_set()
    assert torch.equal(metrics.landmark_nme(points.clone(), points), torch.zeros(2))


def test_nme_of_a_known_offset_and_its_similarity_invariance():
    target = landmark_set()
    predicted = target + torch.tensor([3.0, 4.0])  # 5 px everywhere
    nme = metrics.landmark_nme(predicted, target)
    assert torch.allclose(nme, torch.full((2,), 5.0 / 40.0))
    rotate = torch.tensor([[0.6, -0.8], [0.8, 0.6]]) * 2.5
    moved = metrics.landmark_nme(predicted @ rotate.T + 7, target @ rotate.T + 7)
    assert torch.allclose(moved, nme)


def test_nme_rejects_bad_landmarks():
    points = landmark_set()
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.landmark_nme(points[:1], points)
    with pytest.raises(ValueError, match=r"\(B, 68, 2 or 3\)"):
        metrics.landmark_nme(points[:, :5], points[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        metrics.landmark_nme(points.clone().fill_(float("nan")), points)
    collapsed = points.clone()
    collapsed[1, 45] = collapsed[1, 36]
    with pytest.raises(ValueError, match="image 1: the outer eye corners"):
        metrics.landmark_nme(points, collapsed)


@pytest.fixture
def face_model(bfm_path) -> FaceModel:
    return FaceModel(load_bfm(bfm_path))


@pytest.fixture
def teacher(face_model):
    from sgpn.nets.regressor import CoefficientRegressor
    from sgpn.nets.shape_prior import ShapePrior

    prior = ShapePrior(CoefficientRegressor("shufflenet_v2_x0_5", input_size=64), face_model)
    with torch.no_grad():  # non-zero heads, so the landmarks depend on the image
        for head in prior.regressor.final_layers:
            head.weight.normal_(std=1e-3)
    return prior


def frame_to_crop(teacher, points: torch.Tensor, size: int) -> torch.Tensor:
    from sgpn.nets.shape_prior import crop_to_frame_matrix, invert_similarity

    back = invert_similarity(crop_to_frame_matrix(size, teacher.frame_size))
    return points @ back[:, :2].T + back[:, 2]


def test_teacher_nme_compares_in_the_teacher_frame(teacher):
    output = images(batch=2, size=96)
    predicted = metrics.teacher_landmarks(teacher, output)
    assert predicted.shape == (2, 68, 2) and teacher.training
    own = frame_to_crop(teacher, predicted, 96)  # the teacher's landmarks, in crop pixels
    assert metrics.teacher_nme(teacher, output, own).abs().max() < 1e-4
    shifted = metrics.teacher_nme(teacher, output, own + torch.tensor([2.0, 0.0]))
    assert (shifted > 0).all()


# -- vertex error ------------------------------------------------------------------------------


def test_vertex_error_zero_for_identical_coefficients(face_model):
    coeffs = face_model.random_coefficients(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(metrics.vertex_error(face_model, coeffs, coeffs.clone()), torch.zeros(3))
    assert torch.equal(metrics.vertex_error(face_model, coeffs, coeffs.clone(), posed=True), torch.zeros(3))


def test_vertex_error_known_values(face_model):
    target = torch.zeros(1, coefficients.NUM_COEFFS)
    moved = coefficients.merge(trans=torch.tensor([[0.3, 0.4, 0.0]]))
    assert metrics.vertex_error(face_model, moved, target).item() == pytest.approx(0.0, abs=1e-6)
    posed_error = metrics.vertex_error(face_model, moved, target, posed=True)
    assert posed_error.item() == pytest.approx(0.5, abs=1e-5)
    reshaped = coefficients.merge(id=torch.randn(1, 80))
    offsets = (reshaped[:, :80] @ face_model.id_basis.T).reshape(-1, 3)
    expected = offsets.norm(dim=-1).mean().item()
    assert metrics.vertex_error(face_model, reshaped, target).item() == pytest.approx(expected, rel=1e-5)


def test_vertex_error_rejects_bad_coefficients(face_model):
    coeffs = torch.zeros(2, coefficients.NUM_COEFFS)
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.vertex_error(face_model, coeffs[:1], coeffs)
    with pytest.raises(ValueError, match="shape \\(B, 257\\)"):
        metrics.vertex_error(face_model, coeffs[:, :100], coeffs[:, :100])
    with pytest.raises(ValueError, match="NaN"):
        metrics.vertex_error(face_model, coeffs.clone().fill_(float("nan")), coeffs)


# -- the suite with geometry -------------------------------------------------------------------


def test_suite_with_teacher_and_face_model(teacher, face_model):
    suite = image_suite(teacher=teacher, face_model=face_model)
    output, target = images(size=64), images(size=64, seed=1)
    suite.update(output, target)
    results = suite.compute()
    assert list(results) == ["psnr", "ssim", "nme", "vertex_error", "vertex_error_posed"]
    assert results["nme"].reason == "unavailable (no ground-truth landmarks were given)"
    assert results["vertex_error"].reason == "unavailable (no coefficients were given)"

    landmarks = frame_to_crop(teacher, metrics.teacher_landmarks(teacher, output), 64)
    coeffs = face_model.random_coefficients(2, generator=torch.Generator().manual_seed(1))
    suite.reset()
    suite.update(output, target, landmarks=landmarks + 1.0, coeffs=coeffs, target_coeffs=coeffs.clone())
    results = suite.compute()
    assert results["nme"].value > 0 and math.isfinite(results["nme"].value)
    assert results["vertex_error"].value == 0 and results["vertex_error_posed"].value == 0
    with pytest.raises(ValueError, match="both coeffs and target_coeffs"):
        suite.update(output, target, coeffs=coeffs)
    with pytest.raises(ValueError, match="one row per image"):
        suite.update(output, target, coeffs=coeffs[:1], target_coeffs=coeffs[:1])
    assert suite.num_images == 2


def test_metric_result_holds_a_value_or_a_reason():
    assert MetricResult(27.123456).format(2) == "27.12"
    assert str(MetricResult(None, "unavailable (x)")) == "unavailable (x)"
    with pytest.raises(ValueError):
        MetricResult(None)
    with pytest.raises(ValueError):
        MetricResult(1.0, "both")
