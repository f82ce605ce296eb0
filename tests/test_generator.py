import json

import pytest
import torch
from conftest import SHARED

from sgpn.nets.generator import (AFFB, CONFIGS, GeneratorConfig, SGPNGenerator, get_config, parameter_count,
                                 state_dict_numel)

REFERENCE = SHARED / "reference"
OFFICIAL_JSON = REFERENCE / "official_sgpn512_state_dict.json"
TEST_VECTOR = REFERENCE / "sgpn_official_tiny64.pt"

#: The official checkpoint: 181 tensors, 74,538,999 values (21 blur kernels of 16 included).
PAPER_TENSORS = 181
PAPER_VALUES = 74_538_999
PAPER_PARAMETERS = PAPER_VALUES - 21 * 16


def paper_on_meta(**kw) -> SGPNGenerator:
    with torch.device("meta"):
        return SGPNGenerator("paper", **kw)


def inputs(config: GeneratorConfig, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    size = config.size
    lq = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    i3d = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    coeff = torch.randn(batch, 257, generator=g) * 0.5
    return lq, i3d, coeff


def open_injection(model: SGPNGenerator, value: float = 0.3) -> SGPNGenerator:
    """Give every feature-injection scalar a non-zero value (they start at 0)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(value)
    return model


# -- the paper configuration ----------------------------------------------------------------


def test_paper_size_matches_the_official_checkpoint_count():
    model = paper_on_meta()
    assert len(model.state_dict()) == PAPER_TENSORS
    assert state_dict_numel(model) == PAPER_VALUES
    assert parameter_count(model) == PAPER_PARAMETERS
    assert state_dict_numel(model.netE) == 13_086_192
    assert state_dict_numel(model.netG) == 61_452_807


@pytest.mark.skipif(not OFFICIAL_JSON.is_file(), reason="shared reference files absent")
def test_paper_state_dict_names_and_shapes_match_the_official_listing():
    listing = json.loads(OFFICIAL_JSON.read_text())
    ours = paper_on_meta().state_dict()
    assert list(ours) == [name for name, _, _ in listing]
    for name, shape, dtype in listing:
        assert list(ours[name].shape) == shape, name
        assert str(ours[name].dtype) == f"torch.{dtype}", name
    assert sum(torch.Size(shape).numel() for _, shape, _ in listing) == PAPER_VALUES


def test_named_configs_and_overrides():
    assert set(CONFIGS) >= {"paper", "tiny"}
    assert get_config("paper").size == 512 and get_config("tiny").size == 64
    assert get_config("tiny", fusion="sum").fusion == "sum"
    custom = GeneratorConfig(size=32, channels={4: 8, 8: 8, 16: 4, 32: 4, 64: 2})
    assert list(custom.channels) == [4, 8, 16, 32]  # extra resolutions dropped
    model = SGPNGenerator(custom)
    out = model(*inputs(custom, batch=1))
    assert out.shape == (1, 3, 32, 32)


# -- interoperability with the official release ---------------------------------------------


@pytest.fixture(scope="module")
def vector():
    if not TEST_VECTOR.is_file():
        pytest.skip("shared reference test vector absent")
    return torch.load(TEST_VECTOR, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("channels_last", [True, False])
def test_reproduces_the_official_test_vector(vector, channels_last):
    config = GeneratorConfig.from_official(vector["config"])
    model = SGPNGenerator(config, channels_last=channels_last).eval()
    model.load_official_state_dict(vector["state_dict"])
    with torch.no_grad():
        out = model(vector["lq"], vector["d3d"], vector["coeff"])
    assert (out - vector["out"]).abs().max() < 1e-5
    # autograd path and single-image path (per-sample modulated weights) agree too
    out_grad = model(vector["lq"][:1], vector["d3d"][:1], vector["coeff"][:1])
    assert (out_grad.detach() - vector["out"][:1]).abs().max() < 1e-5


def test_official_config_mapping_width_is_checked(vector):
    config = dict(vector["config"], mapping_in=770)
    with pytest.raises(ValueError, match="mapping_in"):
        GeneratorConfig.from_official(config)


def test_checkpoint_file_round_trip_and_clear_errors(tmp_path):
    model = open_injection(SGPNGenerator("tiny")).eval()
    path = tmp_path / "sgpn_tiny.pth"
    torch.save(model.state_dict(), path)
    loaded = SGPNGenerator.from_checkpoint(path, "tiny").eval()
    x = inputs(model.config)
    with torch.no_grad():
        assert torch.equal(model(*x), loaded(*x))

    state = model.state_dict()
    missing = {k: v for k, v in state.items() if k != "netG.convs.3.convs_mask.0.bias"}
    with pytest.raises(KeyError, match=r"missing key\(s\): netG\.convs\.3\.convs_mask\.0\.bias"):
        SGPNGenerator("tiny").load_official_state_dict(missing)
    wrong = dict(state, **{"netE.ecd1.0.1.weight": torch.zeros(3, 3, 3, 3)})
    with pytest.raises(ValueError, match=r"size mismatch for netE\.ecd1\.0\.1\.weight"):
        SGPNGenerator("tiny").load_official_state_dict(wrong)
    with pytest.raises(KeyError, match="does not look like weights"):
        SGPNGenerator("tiny").load_official_state_dict({"fc.weight": torch.zeros(1)})
    with pytest.raises(FileNotFoundError):
        SGPNGenerator.from_checkpoint(tmp_path / "absent.pth", "tiny")
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        SGPNGenerator.from_checkpoint(tmp_path / "corrupt.pth", "tiny")


# -- AFFB masks and the ablations -----------------------------------------------------------


def test_masks_are_keyed_by_resolution_and_block_and_lie_in_0_1():
    model = SGPNGenerator("tiny").eval()
    config = model.config
    with torch.no_grad():
        image, masks = model(*inputs(config), return_masks=True)
    assert image.shape == (2, 3, 64, 64)
    assert set(masks) == {(r, b) for r in (8, 16, 32, 64) for b in (0, 1)}
    for (res, _), mask in masks.items():
        assert mask.shape == (2, config.channels[res], res, res)
        assert mask.min() > 0 and mask.max() < 1
        assert mask.std() > 0.01  # a fresh block's mask varies over positions


def test_affb_equation():
    block = AFFB(8, 4, style_dim=16, upsample=False)
    x, style = torch.randn(1, 8, 6, 6), torch.randn(1, 16)
    f_lq, f_3d = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        block.noise.weight.fill_(0.7)
        block.activate.bias.normal_()
        out, mask = block(x, style, f_lq, f_3d)
        conv = block.conv(x, style)
        expect_mask = torch.sigmoid(block.convs_mask(torch.cat([conv, f_lq, f_3d], 1)))
        fused = expect_mask * f_lq + (1 - expect_mask) * f_3d
        pre = torch.cat([conv, 0.7 * fused], 1) + block.activate.bias.view(1, -1, 1, 1)
        expect = torch.nn.functional.leaky_relu(pre, 0.2) * 2**0.5
    torch.testing.assert_close(mask, expect_mask)
    torch.testing.assert_close(out, expect)


def test_variant_a_ignores_the_3d_render():
    model = open_injection(SGPNGenerator("tiny", fusion="lq_only")).eval()
    assert model.config.mapping_in == model.config.encoder_style_dim + 257
    assert not any("convs_mask" in name for name in model.state_dict())
    lq, i3d, coeff = inputs(model.config)
    with torch.no_grad():
        out, masks = model(lq, i3d, coeff, return_masks=True)
        assert out.shape == (2, 3, 64, 64) and masks == {}
        assert torch.equal(out, model(lq, torch.rand_like(i3d) * 2 - 1, coeff))
        assert torch.equal(out, model(lq, None, coeff))
        assert not torch.equal(out, model(lq, i3d, coeff + 0.5))  # coefficients still count


def test_variant_b_sums_features_without_masks():
    model = open_injection(SGPNGenerator("tiny", fusion="sum")).eval()
    assert not any("convs_mask" in name for name in model.state_dict())
    lq, i3d, coeff = inputs(model.config)
    with torch.no_grad():
        out, masks = model(lq, i3d, coeff, return_masks=True)
        assert out.shape == (2, 3, 64, 64) and masks == {}
        assert not torch.equal(out, model(lq, torch.rand_like(i3d) * 2 - 1, coeff))


def test_full_model_depends_on_the_3d_render_once_injection_opens():
    model = SGPNGenerator("tiny").eval()
    lq, i3d, coeff = inputs(model.config)
    other = torch.rand_like(i3d) * 2 - 1
    with torch.no_grad():
        # at initialisation the spatial features enter only through z of the encoder
        changed_z = model(lq, other, coeff) - model(lq, i3d, coeff)
        assert changed_z.abs().max() > 0
        open_injection(model)
        assert not torch.equal(model(lq, i3d, coeff), model(lq, other, coeff))


# -- gradients and input checks -------------------------------------------------------------


@pytest.mark.parametrize("fusion", ["affb", "lq_only", "sum"])
def test_gradients_reach_every_parameter(fusion):
    model = open_injection(SGPNGenerator("tiny", fusion=fusion)).train()
    out = model(*inputs(model.config))
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []


def test_mask_convs_get_no_gradient_while_injection_is_closed():
    model = SGPNGenerator("tiny").train()
    model(*inputs(model.config)).mean().backward()
    mask_grads = [p.grad for n, p in model.named_parameters() if "convs_mask" in n]
    assert mask_grads and all(g is None or g.abs().sum() == 0 for g in mask_grads)
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.endswith("noise.weight"))


def test_clear_errors_for_bad_inputs():
    model = SGPNGenerator("tiny")
    lq, i3d, coeff = inputs(model.config)
    with pytest.raises(ValueError, match=r"lq is 32 x 32 px but the model works at 64 x 64 px"):
        model(lq[:, :, :32, :32], i3d, coeff)
    with pytest.raises(ValueError, match=r"i3d must have 3 colour channels"):
        model(lq, i3d[:, :1], coeff)
    with pytest.raises(ValueError, match="NaN"):
        model(lq, i3d.clone().fill_(float("nan")), coeff)
    with pytest.raises(ValueError, match=r"coeff must have shape \(B, 257\)"):
        model(lq, i3d, coeff[:, :200])
    with pytest.raises(ValueError, match="batch sizes differ"):
        model(lq, i3d[:1], coeff)
    with pytest.raises(TypeError, match="floating-point"):
        model(lq.to(torch.uint8), i3d, coeff)
    with pytest.raises(TypeError, match="i3d must be a torch.Tensor"):
        model(lq, None, coeff)  # only variant A may leave out the render


@pytest.mark.parametrize("size", [48, 100, 4, 2])
def test_sizes_must_be_powers_of_two(size):
    with pytest.raises(ValueError, match="power of two"):
        GeneratorConfig(size=size, channels={r: 8 for r in (2, 4, 8, 16, 32, 64, 128)})


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"lacks resolution\(s\) \[128\]"):
        GeneratorConfig(size=128, channels={4: 8, 8: 8, 16: 8, 32: 8, 64: 8})
    with pytest.raises(ValueError, match="fusion"):
        GeneratorConfig(fusion="concat")
    with pytest.raises(KeyError, match="unknown generator config"):
        get_config("huge")
