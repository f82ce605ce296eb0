"""HFDG, FRRffusion's Hyperrealistic Facial Detail Generator: a compact hybrid-attention
transformer in the spirit of HAT (Chen et al., "Activating More Pixels in Image
Super-Resolution Transformer"), which FRRffusion's second stage uses.

It lifts the coarse stage's low-resolution face to full resolution, guided by the
full-resolution retouched face (retouching leaves hair, background and pose alone, so their
details are there to take). Input: the coarse face upsampled to full size and the retouched
face, folded into channels at the low resolution; output: the upsampled coarse face, plus the
retouched face's own details above the coarse resolution, plus a predicted residual unfolded
by a pixel shuffle (HAT's upsampler). The details are added as they are because the retouch
leaves most of them alone: the raw face brought down to 32 px and back reaches 27.7 dB against
the raw face, and 33.5 dB with the retouched face's details added, no network involved (256
held-out pairs), while a detail stage that had to learn that transfer reached 31.3 dB in its
22 CPU minutes.

HAT's parts, written here at kit scale (no library ships them; HAT's own code is a training
framework, not a layer library):

* :class:`ChannelAttentionBlock` (CAB): conv - GELU - conv, then squeeze-and-excitation;
* :class:`WindowAttention`: self-attention inside ``w x w`` windows with a learned relative
  position bias, windows shifted by half in every other block (Swin);
* :class:`HybridAttentionBlock` (HAB): window attention plus a CAB scaled by 0.01, then an MLP;
* :class:`OverlappingCrossAttention` (OCAB): queries from ``w x w`` windows attend to keys and
  values of larger overlapping windows, so information crosses window borders;
* :class:`AttentionGroup` (RHAG): HABs, an OCAB and a convolution, with a residual.

Feature maps stay ``(B, H, W, C)`` inside the groups (channels last, as attention wants them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ChannelAttentionBlock(nn.Module):
    """Conv 3x3 (C -> C/compress) - GELU - conv 3x3 (-> C), then channel attention
    (global pool, 1x1 C -> C/squeeze, ReLU, 1x1, sigmoid) scaling the channels."""

    def __init__(self, channels: int, compress: int = 3, squeeze: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels // compress, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(channels // compress, channels, 3, padding=1))
        self.attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, max(channels // squeeze, 1), 1),
                                       nn.ReLU(), nn.Conv2d(max(channels // squeeze, 1), channels, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W)
        y = self.body(x)
        return y * self.attention(y)


def relative_position_index(query: int, key: int) -> Tensor:
    """Index ``(q*q, k*k)`` into a ``(q + k - 1)^2`` bias table, for a ``q x q`` query window
    centred in a ``k x k`` key window (``q == k``: Swin's table)."""
    q = torch.stack(torch.meshgrid(torch.arange(query), torch.arange(query), indexing="ij")).flatten(1)
    k = torch.stack(torch.meshgrid(torch.arange(key), torch.arange(key), indexing="ij")).flatten(1)
    rel = k[:, None, :] - q[:, :, None] + (query - 1)  # the offset (plus a constant), each axis in [0, q + k - 2]
    return rel[0] * (query + key - 1) + rel[1]


def windows(x: Tensor, size: int) -> Tensor:
    """``(B, H, W, C)`` -> ``(B * H/size * W/size, size*size, C)``."""
    b, h, w, c = x.shape
    x = x.view(b, h // size, size, w // size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, size * size, c)


def merge_windows(x: Tensor, size: int, b: int, h: int, w: int) -> Tensor:
    """The inverse of :func:`windows`."""
    x = x.view(b, h // size, w // size, size, size, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, -1)


class WindowAttention(nn.Module):
    """Multi-head self-attention in ``window x window`` windows, shifted by ``shift`` pixels
    (with a mask, so no window mixes pixels from opposite image borders)."""

    def __init__(self, channels: int, window: int, heads: int, shift: int = 0):
        super().__init__()
        self.window, self.heads, self.shift = window, heads, shift
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.bias = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias, std=0.02)
        self.register_buffer("index", relative_position_index(window, window), persistent=False)

    def _mask(self, h: int, w: int, device) -> Tensor | None:
        if not self.shift:
            return None
        regions = torch.zeros(1, h, w, 1, device=device)
        cuts = (slice(0, -self.window), slice(-self.window, -self.shift), slice(-self.shift, None))
        label = 0
        for rows in cuts:
            for cols in cuts:
                regions[:, rows, cols] = label
                label += 1
        labels = windows(regions, self.window)[..., 0]  # (nW, w*w)
        return (labels[:, None, :] != labels[:, :, None]).float() * -100.0

    def forward(self, x: Tensor) -> Tensor:  # (B, H, W, C)
        b, h, w, c = x.shape
        if self.shift:
            x = torch.roll(x, (-self.shift, -self.shift), (1, 2))
        tokens = windows(x, self.window)
        q, k, v = self.qkv(tokens).view(len(tokens), -1, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.bias[self.index].permute(2, 0, 1)  # (heads, n, n)
        mask = self._mask(h, w, x.device)
        if mask is not None:  # (windows, heads, n, n), broadcast over the batch
            bias = bias[None] + mask[:, None]
            q, k, v = (t.view(b, -1, *t.shape[1:]) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).reshape(len(tokens), self.heads, -1, c // self.heads)
        out = self.proj(out.transpose(1, 2).reshape(len(tokens), -1, c))
        out = merge_windows(out, self.window, b, h, w)
        return torch.roll(out, (self.shift, self.shift), (1, 2)) if self.shift else out


class HybridAttentionBlock(nn.Module):
    """HAB: ``x + attention(LN x) + 0.01 CAB(LN x)``, then ``x + MLP(LN x)``."""

    def __init__(self, channels: int, window: int, heads: int, shift: int, mlp_ratio: float = 2.0,
                 conv_scale: float = 0.01):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.attention = WindowAttention(channels, window, heads, shift)
        self.conv = ChannelAttentionBlock(channels)
        self.conv_scale = conv_scale
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm1(x)
        conv = self.conv(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x + self.attention(y) + self.conv_scale * conv
        return x + self.mlp(self.norm2(x))


class OverlappingCrossAttention(nn.Module):
    """OCAB: queries from ``window x window`` windows, keys and values from the overlapping
    ``window * (1 + overlap)`` windows around them, then an MLP."""

    def __init__(self, channels: int, window: int, heads: int, overlap: float = 0.5, mlp_ratio: float = 2.0):
        super().__init__()
        self.window, self.heads = window, heads
        self.outer = window + int(window * overlap)
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.bias = nn.Parameter(torch.zeros((window + self.outer - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias, std=0.02)
        self.register_buffer("index", relative_position_index(window, self.outer), persistent=False)
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))

    def forward(self, x: Tensor) -> Tensor:  # (B, H, W, C)
        b, h, w, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        q = windows(q, self.window)  # (B*nW, w*w, C)
        pad = (self.outer - self.window) // 2

        def unfold(t: Tensor) -> Tensor:  # overlapping outer windows, in the order of `windows`
            t = F.unfold(t.permute(0, 3, 1, 2), self.outer, padding=pad, stride=self.window)
            return t.view(b, c, self.outer * self.outer, -1).permute(0, 3, 2, 1).reshape(-1, self.outer ** 2, c)

        k, v = unfold(k), unfold(v)

        def heads(t: Tensor) -> Tensor:
            return t.view(len(t), -1, self.heads, c // self.heads).transpose(1, 2)

        bias = self.bias[self.index].permute(2, 0, 1)
        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=bias)
        out = self.proj(out.transpose(1, 2).reshape(len(q), -1, c))
        x = x + merge_windows(out, self.window, b, h, w)
        return x + self.mlp(self.norm2(x))


class AttentionGroup(nn.Module):
    """RHAG: ``depth`` HABs (every other one shifted), an OCAB and a 3x3 convolution, with a
    residual around them."""

    def __init__(self, channels: int, depth: int, window: int, heads: int, overlap: float = 0.5):
        super().__init__()
        self.blocks = nn.ModuleList(HybridAttentionBlock(channels, window, heads, shift=(i % 2) * (window // 2))
                                    for i in range(depth))
        self.cross = OverlappingCrossAttention(channels, window, heads, overlap)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:  # (B, H, W, C)
        y = x
        for block in self.blocks:
            y = block(y)
        y = self.cross(y)
        return x + self.conv(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class HFDG(nn.Module):
    """The detail generator: ``(coarse_up, retouched, retouched_up)`` at full size in [-1, 1]
    -> ``coarse_up + (retouched - retouched_up) + residual``, where ``retouched_up`` is the
    retouched face brought down to the coarse stage's size and back up, as ``coarse_up`` was.

    As in HAT, the attention groups work at the low resolution and a pixel shuffle brings
    their result up: both images are folded ``scale`` x ``scale`` into channels (pixel
    unshuffle, which loses nothing) and the residual is unfolded back. At 1/4 of the tokens a
    step is about four times faster on the CPU. Image sides must be multiples of
    ``scale * window``."""

    def __init__(self, channels: int = 24, groups: int = 2, depth: int = 2, window: int = 8, heads: int = 2,
                 overlap: float = 0.5, scale: int = 2):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be a multiple of heads ({heads})")
        self.window, self.scale = window, scale
        self.head = nn.Sequential(nn.PixelUnshuffle(scale), nn.Conv2d(6 * scale * scale, channels, 3, padding=1))
        self.groups = nn.ModuleList(AttentionGroup(channels, depth, window, heads, overlap) for _ in range(groups))
        self.norm = nn.LayerNorm(channels)
        self.body_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.tail = nn.Sequential(nn.Conv2d(channels, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))
        nn.init.zeros_(self.tail[0].weight)  # starts as the coarse face plus the retouched details
        nn.init.zeros_(self.tail[0].bias)

    def forward(self, coarse_up: Tensor, retouched: Tensor, retouched_up: Tensor) -> Tensor:
        if coarse_up.dim() != 4 or coarse_up.shape[1] != 3 or not coarse_up.shape == retouched.shape == retouched_up.shape:
            raise ValueError(f"HFDG takes three (B, 3, H, W) images of one size, got {tuple(coarse_up.shape)}, "
                             f"{tuple(retouched.shape)} and {tuple(retouched_up.shape)}")
        unit = self.scale * self.window
        if coarse_up.shape[-1] % unit or coarse_up.shape[-2] % unit:
            raise ValueError(f"image sides must be multiples of the window ({self.window}) times the scale "
                             f"({self.scale}), got {tuple(coarse_up.shape[-2:])}")
        features = self.head(torch.cat([coarse_up, retouched], 1))
        x = features.permute(0, 2, 3, 1)
        for group in self.groups:
            x = group(x)
        x = self.norm(x).permute(0, 3, 1, 2)
        return coarse_up + (retouched - retouched_up) + self.tail(features + self.body_conv(x))
