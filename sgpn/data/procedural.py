"""Small 2D drawing kit for the synthetic faces: seeded draws, noise, signed distances, layers.

Everything is a plain torch expression over a pixel grid, so one synthetic face costs a few
milliseconds on a CPU. Shapes are signed distance functions (negative inside) in *face units*
(see :class:`FaceFrame`); :meth:`FaceFrame.coverage` turns a distance into an anti-aliased
alpha about one pixel wide. No drawing library does soft-edged, vectorised, seeded shapes on
tensors, which is why these few helpers exist.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that mixes ``parts`` (ints, or names hashed with CRC32, stable across
    processes): neighbouring inputs give unrelated streams, unlike ``seed + index``."""
    words = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) % 2**64 for p in parts]
    words = [w for x in words for w in (x & 0xFFFFFFFF, x >> 32)]
    low, high = np.random.SeedSequence(words).generate_state(2, np.uint32)
    return (int(high) & 0x7FFFFFFF) << 32 | int(low)


class Draws:
    """Scalar random draws from one ``torch.Generator`` (so an item is a function of its seed)."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        return low + (high - low) * torch.rand((), generator=self.generator).item()

    def chance(self, probability: float) -> bool:
        return self.uniform() < probability

    def choice(self, options, weights=None):
        weights = torch.ones(len(options)) if weights is None else torch.as_tensor(weights, dtype=torch.float)
        return options[int(torch.multinomial(weights, 1, generator=self.generator))]

    def jitter(self, colour, amount: float) -> Tensor:
        """A colour ``(3,)`` with each channel moved by up to ``amount``, kept in [0, 1]."""
        colour = torch.as_tensor(colour, dtype=torch.float32)
        return (colour + amount * (2 * torch.rand(3, generator=self.generator) - 1)).clamp(0, 1)

    def colour(self, saturation: tuple[float, float] = (0.0, 0.6),
               value: tuple[float, float] = (0.15, 0.9)) -> Tensor:
        """A random colour ``(3,)``: a random hue mixed with grey, at a random brightness."""
        hue = torch.rand(3, generator=self.generator)
        hue = hue / hue.max().clamp_min(1e-6)
        grey = torch.ones(3)
        mix = grey + self.uniform(*saturation) * (hue - grey)
        return (mix * self.uniform(*value)).clamp(0, 1)

    def noise(self, size: int, cells: float, channels: int = 1) -> Tensor:
        return value_noise(size, cells, self.generator, channels)


def value_noise(size: int, cells: float, generator: torch.Generator, channels: int = 1) -> Tensor:
    """Smooth noise ``(channels, size, size)`` in about [0, 1]: a ``cells`` x ``cells`` grid of
    uniform values, bicubically upsampled (features about ``size / cells`` pixels wide)."""
    cells = max(1, int(round(cells)))
    grid = torch.rand(1, channels, cells + 1, cells + 1, generator=generator)
    return F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=True)[0]


def noise_1d(t: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """Smooth periodic noise in [0, 1] of a coordinate ``t`` (period 1), ``count`` bumps a period."""
    values = torch.rand(count, generator=generator)
    x = (t % 1.0) * count
    i0 = x.floor().long() % count
    frac = x - x.floor()
    frac = frac * frac * (3 - 2 * frac)
    return torch.lerp(values[i0], values[(i0 + 1) % count], frac)


def smoothstep(edge0: float | Tensor, edge1: float | Tensor, x: Tensor) -> Tensor:
    """0 below ``edge0``, 1 above ``edge1`` (either order), a smooth cubic in between."""
    t = ((x - edge0) / (edge1 - edge0)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def blur(image: Tensor, passes: int = 1) -> Tensor:
    """``(C, H, W)`` blurred by ``passes`` binomial [1, 2, 1] filters (replicated borders)."""
    kernel = torch.tensor([1.0, 2.0, 1.0]) / 4
    kernel = (kernel[:, None] * kernel[None, :]).expand(image.shape[0], 1, 3, 3)
    out = image[None]
    for _ in range(passes):
        out = F.conv2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), kernel, groups=image.shape[0])
    return out[0]


# -- signed distances (face units, negative inside) --------------------------------------------


def sd_ellipse(a: Tensor, b: Tensor, centre, radii, angle: float = 0.0) -> Tensor:
    """Approximate signed distance to an ellipse (exact for circles, good near the edge)."""
    u, v = _local(a, b, centre, angle)
    rx, ry = radii
    return (torch.sqrt((u / rx) ** 2 + (v / ry) ** 2) - 1.0) * min(rx, ry)


def sd_superellipse(a: Tensor, b: Tensor, centre, radii, power: float) -> Tensor:
    """Approximate signed distance to |x/rx|^p + |y/ry|^p = 1 (p=2 ellipse, large p a rounded box)."""
    u, v = a - centre[0], b - centre[1]
    rx, ry = radii
    level = ((u / rx).abs() ** power + (v / ry).abs() ** power) ** (1.0 / power)
    return (level - 1.0) * min(rx, ry)


def sd_capsule(a: Tensor, b: Tensor, start, end, radius: float) -> Tensor:
    """Signed distance to a segment from ``start`` to ``end`` thickened by ``radius``."""
    (ax, ay), (bx, by) = start, end
    dx, dy = bx - ax, by - ay
    t = (((a - ax) * dx + (b - ay) * dy) / max(dx * dx + dy * dy, 1e-12)).clamp(0, 1)
    return torch.hypot(a - ax - t * dx, b - ay - t * dy) - radius


def sd_box(a: Tensor, b: Tensor, centre, half_size, rounding: float = 0.0) -> Tensor:
    """Signed distance to an axis-aligned box with rounded corners."""
    u, v = a - centre[0], b - centre[1]
    qx = u.abs() - (half_size[0] - rounding)
    qy = v.abs() - (half_size[1] - rounding)
    outside = torch.hypot(qx.clamp_min(0), qy.clamp_min(0))
    return outside + torch.maximum(qx, qy).clamp_max(0) - rounding


def _local(a: Tensor, b: Tensor, centre, angle: float) -> tuple[Tensor, Tensor]:
    """Coordinates relative to ``centre``, rotated by ``-angle`` (radians, clockwise on screen)."""
    u, v = a - centre[0], b - centre[1]
    if angle == 0.0:
        return u, v
    c, s = math.cos(angle), math.sin(angle)
    return c * u + s * v, -s * u + c * v


# -- the face frame and layers -------------------------------------------------------------------


class FaceFrame:
    """Pixel grid in face units, from the 68 projected landmarks.

    Origin between the eye centres, ``a`` along the eye line (to the image right), ``b``
    perpendicular to it (down), one unit = the distance between the eye centres. Things drawn
    in this frame follow the face's position, size and roll, which is how an occluder lands on
    the eyes or the mouth whatever the pose.
    """

    def __init__(self, landmarks: Tensor, size: int):
        left, right = landmarks[36:42].mean(0), landmarks[42:48].mean(0)
        self.origin = (left + right) / 2
        axis = right - left
        self.unit = float(axis.norm().clamp_min(1e-3))  # pixels per face unit
        self.ex = axis / self.unit
        self.ey = torch.stack([-self.ex[1], self.ex[0]])
        rows, cols = torch.meshgrid(torch.arange(size, dtype=torch.float32),
                                    torch.arange(size, dtype=torch.float32), indexing="ij")
        self.a, self.b = self.to_frame(torch.stack([cols, rows], -1)).unbind(-1)
        self.points = self.to_frame(landmarks)  # (68, 2) landmarks in face units

    def to_frame(self, pixels: Tensor) -> Tensor:
        rel = pixels - self.origin
        return torch.stack([rel @ self.ex, rel @ self.ey], -1) / self.unit

    def coverage(self, distance: Tensor) -> Tensor:
        """Anti-aliased alpha ``(1, H, W)`` of a signed distance in face units."""
        return (0.5 - distance * self.unit).clamp(0, 1)[None]


def over(image: Tensor, colour: Tensor, alpha: Tensor) -> Tensor:
    """Composite ``colour`` (``(3,)`` or ``(3, H, W)``) over ``image`` with ``alpha`` ``(1, H, W)``."""
    if colour.dim() == 1:
        colour = colour[:, None, None]
    return image + alpha * (colour - image)
