"""StyleGAN2's residual discriminator (rosinality formulation), any power-of-two size.

A 1x1 ConvLayer to ``channels[size]``, one residual block per halving down to 4x4 (two 3x3
convs, the second blurred and strided, plus a blurred 1x1 strided skip, summed / sqrt(2)),
a minibatch-standard-deviation channel, a 3x3 conv and two linear layers to one logit.

``forward(image, return_features=True)`` also returns the output of every block (highest
resolution first) for a feature-matching loss, as the GPEN-style discriminator the release
sketches does (it picks blocks 2..5). The release's discriminator passes a blur kernel to a
residual block that does not take one and cannot be built; here the block takes it.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from sgpn.images import check_images
from sgpn.nets.generator import PAPER_CHANNELS, GeneratorConfig
from sgpn.nets.layers import DEFAULT_BLUR, ConvLayer, EqualLinear


class ResBlock(nn.Module):
    """Two 3x3 convs (the second halves the size) plus a 1x1 downsampling skip."""

    def __init__(self, in_channels: int, out_channels: int, blur_kernel=DEFAULT_BLUR):
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True,
                               blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channels, out_channels, 1, downsample=True,
                              blur_kernel=blur_kernel, activate=False, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2.0)


class Discriminator(nn.Module):
    """Image ``B x 3 x size x size`` in [-1, 1] -> realness logit ``B x 1``."""

    def __init__(self, size: int = 512, channels: Mapping[int, int] | None = None,
                 stddev_group: int = 4, stddev_feat: int = 1, blur_kernel=DEFAULT_BLUR):
        super().__init__()
        if not isinstance(size, int) or size < 8 or size & (size - 1):
            raise ValueError(f"discriminator size must be a power of two >= 8, got {size!r}")
        channels = dict(PAPER_CHANNELS if channels is None else channels)
        resolutions = [2**i for i in range(2, int(math.log2(size)) + 1)]
        missing = [r for r in resolutions if r not in channels]
        if missing:
            raise ValueError(f"channel table lacks resolution(s) {missing} for size {size}")
        if stddev_group < 1 or stddev_feat < 1 or channels[4] % stddev_feat:
            raise ValueError(f"stddev_group ({stddev_group}) and stddev_feat ({stddev_feat}) must "
                             f"be >= 1 and stddev_feat must divide channels[4] = {channels[4]}")
        self.size = size
        blocks: list[nn.Module] = [ConvLayer(3, channels[size], 1)]
        for res in reversed(resolutions[1:]):
            blocks.append(ResBlock(channels[res], channels[res // 2], blur_kernel))
        self.convs = nn.Sequential(*blocks)
        self.stddev_group = stddev_group
        self.stddev_feat = stddev_feat
        self.final_conv = ConvLayer(channels[4] + stddev_feat, channels[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(channels[4] * 4 * 4, channels[4], activation=True),
            EqualLinear(channels[4], 1),
        )

    @classmethod
    def for_generator(cls, config: GeneratorConfig, **kwargs) -> "Discriminator":
        """A discriminator with the generator's size and channel table."""
        return cls(config.size, config.channels, **kwargs)

    def minibatch_stddev(self, x: torch.Tensor) -> torch.Tensor:
        """Append the standard deviation across groups of samples as extra channel(s).

        The group is the largest divisor of the batch size up to ``stddev_group``, so any
        batch size works (the original requires divisibility).
        """
        batch, channels, height, width = x.shape
        group = max(g for g in range(1, min(batch, self.stddev_group) + 1) if batch % g == 0)
        y = x.reshape(group, -1, self.stddev_feat, channels // self.stddev_feat, height, width)
        y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)
        y = y.mean([2, 3, 4], keepdim=True).squeeze(2)  # (batch / group, feat, 1, 1)
        y = y.repeat(group, 1, height, width)
        return torch.cat([x, y], dim=1)

    def forward(self, image: torch.Tensor, return_features: bool = False):
        check_images(image, "image", size=self.size, value_range=None)
        features = []
        x = image
        for block in self.convs:
            x = block(x)
            features.append(x)
        x = self.final_conv(self.minibatch_stddev(x))
        logit = self.final_linear(x.reshape(x.shape[0], -1))
        return (logit, features) if return_features else logit
