import json

import numpy as np
import pytest
import torch
from conftest import SHARED

from sgpn.nets.regressor import HEAD_SIZES, INPUT_SIZE, CoefficientRegressor
from sgpn.nets.shape_prior import (D3DFR_LANDMARKS_3D, ShapePrior, _fit_scale_translation, crop_to_d3dfr_matrix,
                                   invert_similarity, template_points)

D3DFR_JSON = SHARED / "reference" / "d3dfr_recon_state_dict.json"
#: torchvision ResNet-50 without fc (23,508,032) plus seven heads on 2048 features (526,593).
REGRESSOR_PARAMETERS = 24_034_625
REGRESSOR_TENSORS = 332


@pytest.fixture(scope="module")
def regressor():
    torch.manual_seed(0)
    model = CoefficientRegressor().eval()
    with torch.no_grad():  # non-zero heads, so that a bad load would show in the outputs
        for head in model.final_layers:
            head.weight.normal_(std=0.01)
            head.bias.normal_()
    return model


def faces(batch=1):
    return torch.rand(batch, 3, INPUT_SIZE, INPUT_SIZE, generator=torch.Generator().manual_seed(1))


def test_layout_and_zero_initialised_heads():
    model = CoefficientRegressor().eval()
    state = model.state_dict()
    assert len(state) == REGRESSOR_TENSORS
    assert sum(p.numel() for p in model.parameters()) == REGRESSOR_PARAMETERS
    assert [state[f"final_layers.{i}.weight"].shape[0] for i in range(7)] == list(HEAD_SIZES)
    assert not any(k.startswith("backbone.fc") for k in state)
    with torch.no_grad():
        out = model(faces(2))
    assert out.shape == (2, 257) and torch.equal(out, torch.zeros(2, 257))


@pytest.mark.skipif(not D3DFR_JSON.is_file(), reason="shared reference files absent")
def test_state_dict_matches_d3dfr_listing():
    listing = json.loads(D3DFR_JSON.read_text())
    state = CoefficientRegressor().state_dict()
    assert list(state) == [name for name, _ in listing]
    assert all(list(state[name].shape) == shape for name, shape in listing)


def test_heads_concatenate_in_coefficient_order(regressor):
    with torch.no_grad():
        x = faces()
        feature = regressor.backbone(x).reshape(1, 2048, 1, 1)
        out = regressor(x)
        start = 0
        for head, size in zip(regressor.final_layers, HEAD_SIZES):
            torch.testing.assert_close(out[:, start:start + size], head(feature).flatten(1))
            start += size


@pytest.mark.parametrize("wrap", ["net_recon", "bare"])
def test_checkpoint_round_trip(tmp_path, regressor, wrap):
    state = regressor.state_dict()
    path = tmp_path / "d3dfr.pth"
    torch.save({"net_recon": state, "epoch": 20} if wrap == "net_recon" else state, path)
    loaded = CoefficientRegressor.from_checkpoint(path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(faces()), regressor(faces()))


def test_checkpoint_errors_name_the_keys(tmp_path, regressor):
    state = regressor.state_dict()
    fresh = CoefficientRegressor()

    def save(obj, name="ckpt.pth"):
        torch.save(obj, tmp_path / name)
        return tmp_path / name

    missing = {k: v for k, v in state.items() if k != "final_layers.4.bias"}
    with pytest.raises(KeyError, match=r"missing key\(s\): final_layers\.4\.bias"):
        fresh.load_checkpoint(save(missing))
    extra = dict(state, **{"backbone.fc.weight": torch.zeros(257, 2048)})
    with pytest.raises(KeyError, match=r"unexpected key\(s\): backbone\.fc\.weight"):
        fresh.load_checkpoint(save(extra))
    wrong = dict(state, **{"final_layers.0.weight": torch.zeros(81, 2048, 1, 1)})
    with pytest.raises(ValueError, match=r"size mismatch for final_layers\.0\.weight \(81, 2048, 1, 1\)"):
        fresh.load_checkpoint(save({"net_recon": wrong}))
    with pytest.raises(KeyError, match="does not look like weights for CoefficientRegressor"):
        fresh.load_checkpoint(save({"conv.weight": torch.zeros(1)}))
    with pytest.raises(ValueError, match="holds no tensors"):
        fresh.load_checkpoint(save({"optimizer": {"lr": 1.0}, "epoch": 3}))
    with pytest.raises(ValueError, match="epoch are not tensors"):
        fresh.load_checkpoint(save(dict(state, epoch=3)))
    with pytest.raises(FileNotFoundError):
        fresh.load_checkpoint(tmp_path / "absent.pth")
    (tmp_path / "broken.pth").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        fresh.load_checkpoint(tmp_path / "broken.pth")


def test_clear_errors_for_bad_inputs(regressor):
    x = faces()
    with pytest.raises(ValueError, match=r"3 colour channels \(RGB\), got 1"):
        regressor(x[:, :1])
    with pytest.raises(ValueError, match=r"shape \(B, 3, 224, 224\), got \(3, 224, 224\)"):
        regressor(x[0])
    with pytest.raises(ValueError, match="224 x 224"):
        regressor(x[:, :, :112, :112])
    with pytest.raises(ValueError, match="NaN or Inf"):
        regressor(torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match=r"\[-1, 1\] image"):
        regressor(x * 2 - 1)
    with pytest.raises(TypeError, match="floating-point"):
        regressor((x * 255).to(torch.uint8))


# -- the shape prior ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [512, 64])
def test_template_similarity_puts_the_face_where_d3dfr_crops_it(size):
    matrix = crop_to_d3dfr_matrix(size).double().numpy()
    assert matrix[0, 1] == 0 and matrix[1, 0] == 0 and matrix[0, 0] == matrix[1, 1] > 0
    mapped = template_points(size) @ matrix[:, :2].T + matrix[:, 2]
    mapped[:, 1] = INPUT_SIZE - 1 - mapped[:, 1]  # D3DFR fits with y up
    translation, scale = _fit_scale_translation(mapped, D3DFR_LANDMARKS_3D)
    assert scale == pytest.approx(102.0, rel=1e-5)  # D3DFR's face scale
    # centred in the 224 crop, up to the one-pixel truncation of D3DFR's resize
    assert np.abs(translation - (INPUT_SIZE / 2)).max() < 1.0
    inverse = invert_similarity(torch.from_numpy(matrix).float())
    round_trip = inverse.double().numpy()[:, :2] @ matrix[:, :2]
    np.testing.assert_allclose(round_trip, np.eye(2), atol=1e-6)


def test_template_points_at_512():
    points = template_points(512)
    assert points.shape == (5, 2)
    np.testing.assert_allclose(points[2], [256.0768, 303.9592], atol=1e-3)  # nose tip
    assert points[0, 0] < points[1, 0] and points[3, 1] > points[0, 1]  # left eye, mouth below


@pytest.mark.parametrize("alignment", ["template", "resize"])
def test_shape_prior_outputs(regressor, alignment):
    prior = ShapePrior(regressor=CoefficientRegressor().eval(), alignment=alignment).eval()
    lq = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        out = prior(lq)
    assert out.coeffs.shape == (2, 257) and torch.equal(out.coeffs, torch.zeros(2, 257))
    assert out.image.shape == (2, 3, 64, 64) and out.mask.shape == (2, 1, 64, 64)
    assert out.regressor_input.shape == (2, 3, INPUT_SIZE, INPUT_SIZE)
    assert out.face.vertices.shape[0] == 2
    background = out.mask == 0
    assert background.any() and (out.mask > 0.5).float().mean() > 0.2  # a face, centred
    assert torch.all(out.image.masked_select(background.expand_as(out.image)) == -1)
    assert out.image.min() >= -1 and out.image.max() <= 1
    assert out.mask[:, :, 32, 32].min() == 1


def test_shape_prior_regresses_from_the_warped_crop(regressor):
    prior = ShapePrior(regressor=regressor).eval()
    lq = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        out = prior(lq)
        torch.testing.assert_close(out.coeffs, regressor(out.regressor_input))
    assert 0 <= out.regressor_input.min() and out.regressor_input.max() <= 1


def test_shape_prior_input_errors():
    prior = ShapePrior(regressor=CoefficientRegressor())
    with pytest.raises(ValueError, match=r"\(B, 3, S, S\)"):
        prior(torch.zeros(1, 3, 64, 32))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        prior(torch.rand(1, 3, 64, 64) * 255)
    with pytest.raises(ValueError, match="NaN"):
        prior(torch.full((1, 3, 64, 64), float("nan")))
    with pytest.raises(ValueError, match="alignment"):
        ShapePrior(regressor=CoefficientRegressor(), alignment="umeyama")
