import pytest
import torch

from sgpn.nets.discriminator import Discriminator, ResBlock
from sgpn.nets.generator import get_config

#: rosinality's StyleGAN2 discriminator at 512 with channel multiplier 2.
PAPER_DISCRIMINATOR_PARAMETERS = 28_982_849


def test_paper_size_parameter_count():
    with torch.device("meta"):
        model = Discriminator(512)
    assert sum(p.numel() for p in model.parameters()) == PAPER_DISCRIMINATOR_PARAMETERS
    assert len(model.convs) == 1 + 7  # 1x1 conv, then 512 -> 4 in seven residual blocks


def test_outputs_and_features_for_the_tiny_generator():
    config = get_config("tiny")
    model = Discriminator.for_generator(config)
    logits, features = model(torch.randn(4, 3, 64, 64), return_features=True)
    assert logits.shape == (4, 1)
    assert [tuple(f.shape[1:]) for f in features] == [
        (16, 64, 64), (32, 32, 32), (64, 16, 16), (64, 8, 8), (64, 4, 4)]
    assert torch.equal(model(torch.zeros(2, 3, 64, 64)), model(torch.zeros(2, 3, 64, 64)))


@pytest.mark.parametrize("batch", [1, 3, 6])
def test_any_batch_size_works_with_minibatch_stddev(batch):
    model = Discriminator(16, {4: 8, 8: 8, 16: 4})
    assert model(torch.randn(batch, 3, 16, 16)).shape == (batch, 1)


def test_stddev_channel_measures_spread_within_groups():
    model = Discriminator(16, {4: 8, 8: 8, 16: 4})
    same = torch.randn(1, 8, 4, 4).expand(4, -1, -1, -1)
    assert model.minibatch_stddev(same)[:, -1].max() < 1e-3  # sqrt(1e-8)
    spread = model.minibatch_stddev(torch.randn(4, 8, 4, 4))[:, -1]
    assert spread.min() > 0.3 and torch.allclose(spread, spread[0].expand_as(spread))


def test_gradients_reach_every_parameter_and_the_image():
    model = Discriminator(32, {4: 8, 8: 8, 16: 8, 32: 4})
    image = torch.randn(4, 3, 32, 32, requires_grad=True)
    logits, features = model(image, return_features=True)
    (logits.sum() + sum(f.square().mean() for f in features)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert image.grad.abs().sum() > 0


def test_resblock_takes_the_blur_kernel():
    block = ResBlock(4, 8, blur_kernel=(1, 2, 1))
    assert block(torch.randn(1, 4, 8, 8)).shape == (1, 8, 4, 4)
    assert block.conv2[0].kernel.shape == (3, 3)


@pytest.mark.parametrize("size", [48, 4, 0])
def test_sizes_must_be_powers_of_two(size):
    with pytest.raises(ValueError, match="power of two"):
        Discriminator(size)


def test_clear_errors():
    model = Discriminator(16, {4: 8, 8: 8, 16: 4})
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\)"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="3 colour channels"):
        model(torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((2, 3, 16, 16), float("nan")))
    with pytest.raises(ValueError, match=r"lacks resolution\(s\) \[32\]"):
        Discriminator(32, {4: 8, 8: 8, 16: 4})
