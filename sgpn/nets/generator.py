"""The SGPN restoration network: encoder, mapping, and a StyleGAN2 decoder with AFFBs.

Data flow (``B`` images of ``size`` x ``size``, values in [-1, 1])::

    I_lq --encoder--> z_lq (256), F_lq = [4x4, 8x8, ..., size]     (one encoder, run on
    I_3d --encoder--> z_3d_img (256), F_3d = [4x4, ..., size]        both images)
    w = mapping(PixelNorm(cat(z_lq, z_3d_img, coefficients 257)))    (769 -> 512 -> 512 -> 512)
    x = const 4x4 -> styled conv whose "noise" is F_lq at 4x4 -> ToRGB
    per resolution 8..size: AFFB (upsampling) -> AFFB -> ToRGB + upsampled skip

AFFB, as the release computes it::

    out = modconv(x, w)
    M   = sigmoid(Conv1x1_{3C->C}(cat(out, F_lq, F_3d)))
    F   = M * F_lq + (1 - M) * F_3d
    y   = fused_lrelu(cat(out, s * F))        # s: learned scalar, initialised to 0

so every activation and ToRGB sees 2C channels. Module and parameter names match the
official checkpoint (``netE.*``, ``netG.*``), which loads with ``strict=True``.

Ablations from the paper are a config switch (:attr:`GeneratorConfig.fusion`):
``"affb"`` (full model), ``"lq_only"`` (variant A: no F_3d branch, I_3d is not encoded and the
mapping takes 256 + 257 values) and ``"sum"`` (variant B: no AFFB, F = F_lq + F_3d).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field, replace
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from sgpn.face3d.coefficients import NUM_COEFFS, check_coefficients
from sgpn.images import check_images
from sgpn.nets.layers import (DEFAULT_BLUR, ConstantInput, ConvLayer, EqualConv2d, EqualLinear, FusedLeakyReLU,
                              ModulatedConv2d, PixelNorm, Upsample, needs_grad)
from sgpn.weights import load_strict, read_state_dict

FUSIONS = ("affb", "lq_only", "sum")

#: Channels per resolution in the official release (StyleGAN2, channel multiplier 2).
PAPER_CHANNELS: dict[int, int] = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256,
                                  256: 128, 512: 64, 1024: 32}
#: A narrow 64 px network for CPU training in minutes.
TINY_CHANNELS: dict[int, int] = {4: 64, 8: 64, 16: 64, 32: 32, 64: 16}


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything that fixes the generator's architecture.

    ``channels`` maps every power of two from 4 to ``size`` to a channel count (shared by the
    encoder and the decoder at that resolution, because AFFB mixes their features).
    """

    size: int = 512
    channels: Mapping[int, int] = field(default_factory=lambda: dict(PAPER_CHANNELS))
    encoder_style_dim: int = 256
    style_dim: int = 512
    n_mlp: int = 3
    lr_mlp: float = 0.01
    fusion: str = "affb"
    blur_kernel: tuple[int, ...] = DEFAULT_BLUR

    def __post_init__(self):
        size = self.size
        if not isinstance(size, int) or size < 8 or size & (size - 1):
            raise ValueError(f"generator size must be a power of two >= 8, got {size!r}")
        channels = {int(k): int(v) for k, v in dict(self.channels).items()}
        missing = [r for r in self.resolutions if r not in channels]
        if missing:
            raise ValueError(f"channel table lacks resolution(s) {missing} for size {size}; "
                             f"it has {sorted(channels)}")
        bad = {r: c for r, c in channels.items() if c < 1}
        if bad:
            raise ValueError(f"channel counts must be positive, got {bad}")
        object.__setattr__(self, "channels", {r: channels[r] for r in self.resolutions})
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.n_mlp < 1:
            raise ValueError(f"n_mlp must be >= 1, got {self.n_mlp}")

    @property
    def log_size(self) -> int:
        return int(math.log2(self.size))

    @property
    def resolutions(self) -> list[int]:
        """4, 8, ..., size."""
        return [2**i for i in range(2, int(math.log2(self.size)) + 1)]

    @property
    def uses_i3d_features(self) -> bool:
        return self.fusion != "lq_only"

    @property
    def mapping_in(self) -> int:
        """Width of the mapping input: z_lq, z of I_3d (unless variant A), 257 coefficients."""
        encoded = 2 if self.uses_i3d_features else 1
        return encoded * self.encoder_style_dim + NUM_COEFFS

    @property
    def n_latent(self) -> int:
        return 2 * self.log_size - 2

    @classmethod
    def from_official(cls, config: Mapping) -> "GeneratorConfig":
        """Build from an official-format config dict (``size``, ``channels``,
        ``encoder_style_dim``, ``style_dim``, ``mapping_in``), e.g. the test vector's."""
        made = cls(size=int(config["size"]), channels=config["channels"],
                   encoder_style_dim=int(config.get("encoder_style_dim", 256)),
                   style_dim=int(config.get("style_dim", 512)))
        if "mapping_in" in config and int(config["mapping_in"]) != made.mapping_in:
            raise ValueError(f"official config says mapping_in={config['mapping_in']}, but "
                             f"2 x {made.encoder_style_dim} + {NUM_COEFFS} = {made.mapping_in}")
        return made


CONFIGS: dict[str, GeneratorConfig] = {
    "paper": GeneratorConfig(),
    "tiny": GeneratorConfig(size=64, channels=TINY_CHANNELS, encoder_style_dim=128,
                            style_dim=256),
}


def get_config(config: str | GeneratorConfig | Mapping = "paper", **overrides) -> GeneratorConfig:
    """A named configuration (``"paper"``, ``"tiny"``), a config, or a dict of its fields;
    ``overrides`` replace fields, e.g. ``get_config("tiny", fusion="sum")``."""
    if isinstance(config, str):
        if config not in CONFIGS:
            raise KeyError(f"unknown generator config {config!r}; choose from {sorted(CONFIGS)}")
        config = CONFIGS[config]
    elif isinstance(config, Mapping):
        config = GeneratorConfig(**config)
    elif not isinstance(config, GeneratorConfig):
        raise TypeError(f"config must be a name, GeneratorConfig or dict, got {type(config).__name__}")
    return replace(config, **overrides) if overrides else config


# ----------------------------------------------------------------------------------------------
# Encoder
# ----------------------------------------------------------------------------------------------


class Encoder(nn.Module):
    """One encoder for I_lq and I_3d: a 1x1 conv, then one blur + stride-2 conv per halving.

    Returns the latent ``z`` (``B x encoder_style_dim``) and the feature after every layer,
    smallest first (``[4x4, 8x8, ..., size]``), which the decoder injects at each resolution.
    """

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        ch = config.channels
        self.size = config.size
        self.num_layers = config.log_size - 1
        self.ecd0 = nn.Sequential(ConvLayer(3, ch[config.size], 1))
        for i in range(1, self.num_layers):
            res_in = config.size >> (i - 1)
            layer = ConvLayer(ch[res_in], ch[res_in // 2], 3, downsample=True,
                              blur_kernel=config.blur_kernel)
            self.add_module(f"ecd{i}", nn.Sequential(layer))
        self.final_linear = nn.Sequential(
            EqualLinear(ch[4] * 4 * 4, config.encoder_style_dim, activation=True))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        x = image
        for i in range(self.num_layers):
            x = getattr(self, f"ecd{i}")(x)
            features.append(x)
        z = self.final_linear(x.reshape(x.shape[0], -1))
        return z, features[::-1]


# ----------------------------------------------------------------------------------------------
# Decoder blocks
# ----------------------------------------------------------------------------------------------


def fuse_features(f_lq: torch.Tensor, f_3d: torch.Tensor | None, mask: torch.Tensor | None,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """The feature a block injects: F_lq alone (no F_3d), F_lq + F_3d (no mask), or
    M F_lq + (1 - M) F_3d (AFFB). ``out`` receives the result when given."""
    if f_3d is None:
        return f_lq if out is None else out.copy_(f_lq)
    if mask is None:
        return torch.add(f_lq, f_3d, out=out)
    # lerp wants one dtype; under bf16 autocast the three can differ (lerp is not autocast's)
    dtype = torch.promote_types(torch.promote_types(f_lq.dtype, f_3d.dtype), mask.dtype)
    return torch.lerp(f_3d.to(dtype), f_lq.to(dtype), mask.to(dtype), out=out)  # f_3d + M (f_lq - f_3d)


class FeatureInjection(nn.Module):
    """SGPN's "noise injection": concatenates ``s * F`` to the activations.

    ``s`` is one learned scalar, initialised to 0, so a fresh network starts as a plain
    StyleGAN2 decoder and learns how much of the spatial features to let in. F is made by
    :func:`fuse_features`; in inference it is written straight into the output buffer.
    """

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, f_lq: torch.Tensor, f_3d: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        if f_lq.shape[0] != x.shape[0] or f_lq.shape[2:] != x.shape[2:]:
            raise ValueError(f"injected feature {tuple(f_lq.shape)} does not match the "
                             f"activations {tuple(x.shape)} in batch or spatial size")
        if needs_grad(x, f_lq, self.weight, *(t for t in (f_3d, mask) if t is not None)):
            return torch.cat([x, self.weight * fuse_features(f_lq, f_3d, mask)], dim=1)
        channels = x.shape[1]
        layout = (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
                  else torch.contiguous_format)
        out = torch.empty((x.shape[0], channels + f_lq.shape[1], *x.shape[2:]), dtype=x.dtype,
                          device=x.device, memory_format=layout)
        out[:, :channels] = x
        fuse_features(f_lq, f_3d, mask, out=out[:, channels:]).mul_(self.weight)
        return out


class StyledConv(nn.Module):
    """The 4x4 styled conv: modulated conv, concatenated F_lq, fused leaky ReLU on 2C."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int,
                 blur_kernel=DEFAULT_BLUR):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim,
                                    blur_kernel=blur_kernel)
        self.noise = FeatureInjection()
        self.activate = FusedLeakyReLU(2 * out_channels, inplace=True)

    def forward(self, x: torch.Tensor, style: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), feature))


class AFFB(nn.Module):
    """Adaptive Feature Fusion Block: a styled conv whose injected feature mixes F_lq and F_3d
    through a learned spatial mask ``M`` (per position and channel).

    ``fusion="affb"``: F = M F_lq + (1 - M) F_3d, M = sigmoid(Conv1x1(cat(out, F_lq, F_3d)));
    ``"sum"``: F = F_lq + F_3d (no mask); ``"lq_only"``: F = F_lq (no mask, no F_3d).
    ``mask_override``: a function of the learned mask that replaces it (:func:`overridden_masks`,
    for measuring what the masks do); ``None`` in training and restoration.
    """

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, upsample: bool,
                 fusion: str = "affb", blur_kernel=DEFAULT_BLUR):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.fusion = fusion
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim, upsample=upsample,
                                    blur_kernel=blur_kernel)
        self.noise = FeatureInjection()
        self.activate = FusedLeakyReLU(2 * out_channels, inplace=True)
        if fusion == "affb":
            self.convs_mask = nn.Sequential(EqualConv2d(3 * out_channels, out_channels, 1))
        self.mask_override = None

    def mask(self, out: torch.Tensor, f_lq: torch.Tensor, f_3d: torch.Tensor) -> torch.Tensor:
        """M = sigmoid(Conv1x1(cat(out, F_lq, F_3d))), as three 1x1 convolutions summed, so
        the 3C-channel concatenation is never built (same sums, split by input channel)."""
        conv = self.convs_mask[0]
        weight = conv.weight * conv.scale
        c = out.shape[1]
        logits = F.conv2d(out, weight[:, :c], conv.bias)
        logits += F.conv2d(f_lq, weight[:, c:2 * c])  # in place is autograd-safe here:
        logits += F.conv2d(f_3d, weight[:, 2 * c:])  # convolutions do not keep their output
        return logits.sigmoid_()

    def forward(self, x: torch.Tensor, style: torch.Tensor, f_lq: torch.Tensor,
                f_3d: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.conv(x, style)
        if self.fusion == "lq_only":
            f_3d = None
        mask = self.mask(out, f_lq, f_3d) if self.fusion == "affb" else None
        if mask is not None and self.mask_override is not None:
            mask = self.mask_override(mask)
        return self.activate(self.noise(out, f_lq, f_3d, mask)), mask


@contextlib.contextmanager
def overridden_masks(generator: nn.Module, override):
    """Within the block, every AFFB of ``generator`` uses ``override(mask)`` instead of its
    learned mask ``(B, C, r, r)`` (an intervention: what does the output lose when M is set
    by hand?). The learned masks come back on exit, also after an error."""
    blocks = [m for m in generator.modules() if isinstance(m, AFFB) and m.fusion == "affb"]
    if not blocks:
        raise ValueError("the generator has no AFFB masks to override (fusion is not 'affb')")
    for block in blocks:
        block.mask_override = override
    try:
        yield
    finally:
        for block in blocks:
            block.mask_override = None


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB plus a bias, added to the upsampled skip."""

    def __init__(self, in_channels: int, style_dim: int, upsample: bool = True,
                 blur_kernel=DEFAULT_BLUR):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor,
                skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class Decoder(nn.Module):
    """Mapping network and StyleGAN2 synthesis with feature injection (the release's netG)."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        ch, style_dim = config.channels, config.style_dim
        self.n_latent = config.n_latent
        mlp: list[nn.Module] = [PixelNorm()]
        width = config.mapping_in
        for _ in range(config.n_mlp):
            mlp.append(EqualLinear(width, style_dim, lr_mul=config.lr_mlp, activation=True))
            width = style_dim
        self.mlp = nn.Sequential(*mlp)

        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], style_dim, blur_kernel=config.blur_kernel)
        self.to_rgb1 = ToRGB(2 * ch[4], style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channels = ch[4]
        for res in config.resolutions[1:]:
            out_channels = ch[res]
            self.convs.append(AFFB(2 * in_channels, out_channels, style_dim, upsample=True,
                                   fusion=config.fusion, blur_kernel=config.blur_kernel))
            self.convs.append(AFFB(2 * out_channels, out_channels, style_dim, upsample=False,
                                   fusion=config.fusion, blur_kernel=config.blur_kernel))
            self.to_rgbs.append(ToRGB(2 * out_channels, style_dim, blur_kernel=config.blur_kernel))
            in_channels = out_channels

    def forward(self, mapping_input: torch.Tensor, f_lq: list[torch.Tensor],
                f_3d: list[torch.Tensor] | None):
        """Image and the AFFB masks ``{(resolution, block): M}`` (block 0 upsamples)."""
        w = self.mlp(mapping_input)  # the same w feeds every layer
        out = self.input(w.shape[0])
        if f_lq[0].is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous(memory_format=torch.channels_last)  # keep one layout throughout
        out = self.conv1(out, w, f_lq[0])
        skip = self.to_rgb1(out, w)
        masks: dict[tuple[int, int], torch.Tensor] = {}
        for level, to_rgb in enumerate(self.to_rgbs, start=1):
            res = 4 << level
            feature_3d = f_3d[level] if f_3d is not None else None
            for block in range(2):
                out, mask = self.convs[2 * (level - 1) + block](out, w, f_lq[level], feature_3d)
                if mask is not None:
                    masks[(res, block)] = mask
            skip = to_rgb(out, w, skip)
        return skip, masks


# ----------------------------------------------------------------------------------------------
# The full generator
# ----------------------------------------------------------------------------------------------


class SGPNGenerator(nn.Module):
    """SGPN's restoration network (the release's ``FullGenerator_SGPN``), any size.

    ``forward(lq, i3d, coeff)`` takes the low-quality image and the rendered shape prior
    I_3d (both ``B x 3 x size x size`` in [-1, 1]) and the 257 coefficients z_3d, and returns
    the restored image. Like the release, the output is not clamped (the release's demo
    clamps to [-1, 1] for display). ``return_masks=True`` also returns the AFFB masks.
    """

    def __init__(self, config: str | GeneratorConfig | Mapping = "paper", *,
                 channels_last: bool = True, **overrides):
        super().__init__()
        self.config = get_config(config, **overrides)
        self.channels_last = channels_last
        self.netE = Encoder(self.config)
        self.netG = Decoder(self.config)

    @property
    def size(self) -> int:
        return self.config.size

    def check_inputs(self, lq: torch.Tensor, i3d: torch.Tensor | None, coeff: torch.Tensor):
        """Raise a clear error for inputs the network cannot take."""
        size = self.config.size
        images = {"lq": lq} if not self.config.uses_i3d_features and i3d is None else {"lq": lq, "i3d": i3d}
        for name, image in images.items():
            check_images(image, name, size=size, value_range=None)
        coeff = check_coefficients(coeff, "coeff")
        batch = lq.shape[0]
        for name, tensor in {**images, "coeff": coeff}.items():
            if tensor.shape[0] != batch:
                raise ValueError(f"batch sizes differ: lq has {batch}, {name} has {tensor.shape[0]}")
        return coeff

    def encode(self, lq: torch.Tensor, i3d: torch.Tensor | None, coeff: torch.Tensor):
        """Mapping input and the feature pyramids F_lq, F_3d (``None`` in variant A)."""
        if not self.config.uses_i3d_features:
            z_lq, f_lq = self.netE(lq)
            return torch.cat([z_lq, coeff], dim=1), f_lq, None
        # one encoder pass over both images: same numbers, better use of the CPU
        z, features = self.netE(torch.cat([lq, i3d], dim=0))
        batch = lq.shape[0]
        f_lq = [f[:batch] for f in features]
        f_3d = [f[batch:] for f in features]
        return torch.cat([z[:batch], z[batch:], coeff], dim=1), f_lq, f_3d

    def forward(self, lq: torch.Tensor, i3d: torch.Tensor | None, coeff: torch.Tensor,
                return_masks: bool = False):
        coeff = self.check_inputs(lq, i3d, coeff)
        if self.channels_last:
            lq = lq.contiguous(memory_format=torch.channels_last)
            i3d = i3d.contiguous(memory_format=torch.channels_last) if i3d is not None else None
        mapping_input, f_lq, f_3d = self.encode(lq, i3d, coeff)
        image, masks = self.netG(mapping_input, f_lq, f_3d)
        image = image.contiguous()
        return (image, masks) if return_masks else image

    # -- checkpoints ------------------------------------------------------------------------

    def load_official_state_dict(self, state_dict: Mapping[str, torch.Tensor], source: str = "state dict"):
        """Load a state dict in the release's format (``netE.*``, ``netG.*``), strictly."""
        load_strict(self, state_dict, source)
        return self

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, config: str | GeneratorConfig | Mapping = "paper",
                        **kwargs) -> "SGPNGenerator":
        """Build a generator and load the official ``sgpn.pth`` (or any checkpoint in its
        format: a bare state dict, or a dict holding one under ``"state_dict"``)."""
        model = cls(config, **kwargs)
        return model.load_official_state_dict(read_state_dict(path, keys=("state_dict",)), str(path))


def state_dict_numel(module: nn.Module) -> int:
    """Number of values in the state dict (parameters and persistent buffers, such as the
    blur kernels the official checkpoint lists)."""
    return sum(t.numel() for t in module.state_dict().values())


def parameter_count(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
