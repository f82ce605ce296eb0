"""Degradations that turn a high-quality face into the low-quality input SGPN restores.

Three tasks from the paper, one class each:

- :class:`BlindDegradation`: blur, downsample, noise, real JPEG, resize back (GFPGAN's
  training degradation, its ranges as defaults);
- :class:`SuperResolution`: bicubic down by x4 / x8 / x16 and back up;
- :class:`InpaintingMask`: free-form strokes and boxes punched out of the face.

Conventions shared by all three:

- images are float tensors ``(B, 3, H, W)`` in ``[0, 1]`` on any device; the output has the
  input's size, dtype and device;
- ``generator`` is a ``torch.Generator``, an int seed, a sequence of one of those per image, or
  ``None`` (torch's global generator). A sequence makes image ``i`` of a batch identical to a
  call on image ``i`` alone with ``generator[i]``, which is what a data loader needs to
  reproduce a sample from its index. Int seeds draw on the CPU, so the same seed gives the same
  parameters and noise on every device;
- the result is a :class:`Degraded` holding the LQ image, the parameters actually drawn for
  each image (plain floats, ints and strings, ready for ``json.dumps`` or a figure caption),
  and, for inpainting, the hole mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.io import decode_jpeg, encode_jpeg

from sgpn.images import check_images

GeneratorLike = Union[torch.Generator, int, None, Sequence[Union[torch.Generator, int]]]
Range = tuple[float, float]


@dataclass
class Degraded:
    """The output of every degradation."""

    lq: Tensor  #: ``(B, 3, H, W)`` in ``[0, 1]``, the input's size
    params: list[dict]  #: per image, the parameters actually drawn (JSON-friendly)
    mask: Tensor | None = None  #: inpainting only: ``(B, 1, H, W)``, 1 = missing pixel


def per_image_generators(generator: GeneratorLike, batch_size: int) -> list[torch.Generator]:
    """One generator per image: a single generator or seed is shared (drawn from in order)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators/seeds for a batch of {batch_size} images")
        return [_as_generator(g) for g in generator]
    return [_as_generator(generator)] * batch_size


def _as_generator(generator) -> torch.Generator:
    if generator is None:
        return torch.default_generator
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")


def draw_uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator, device=generator.device).item()


def draw_integer(generator: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in ``[low, high]``, both ends included."""
    return int(torch.randint(low, high + 1, (), generator=generator, device=generator.device).item())


def check_range(name: str, value, low: float, high: float = math.inf, *, optional: bool = True,
                 low_open: bool = False) -> None:
    """Validate a ``(min, max)`` range inside ``[low, high]`` (``None`` switches a step off)."""
    if value is None and optional:
        return
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ValueError(f"{name} must be a (min, max) pair{' or None' if optional else ''}, got {value!r}")
    a, b = value
    too_low = a <= low if low_open else a < low
    if not (a <= b) or too_low or b > high:
        bound = "(" if low_open else "["
        raise ValueError(f"{name} must satisfy {bound}{low}, {high}] with min <= max, got {value!r}")


def gaussian_kernels(sigma_x: Tensor, sigma_y: Tensor, rotation: Tensor, size: int) -> Tensor:
    """Normalised, rotated anisotropic Gaussian kernels ``(B, size, size)``.

    Written here because kornia's Gaussian kernels are axis-aligned; GFPGAN's blur rotates the
    covariance ``R diag(sx^2, sy^2) R^T`` by an angle in [-pi, pi].
    """
    cos, sin = rotation.cos()[:, None, None], rotation.sin()[:, None, None]
    half = size // 2
    axis = torch.arange(-half, half + 1, dtype=sigma_x.dtype, device=sigma_x.device)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    u = cos * x + sin * y  # coordinates in the kernel's own (rotated) axes
    v = -sin * x + cos * y
    kernels = torch.exp(-0.5 * ((u / sigma_x[:, None, None]) ** 2 + (v / sigma_y[:, None, None]) ** 2))
    return kernels / kernels.sum(dim=(1, 2), keepdim=True)


def jpeg(image: Tensor, quality: int) -> Tensor:
    """Compress one ``(3, H, W)`` image in [0, 1] with a real JPEG codec (libjpeg via torchvision).

    The codec runs on the CPU whatever the image's device: torchvision's GPU encoder (nvJPEG)
    would give different bytes, so the same seed would give different images on different
    devices. The result comes back on the image's device.
    """
    pixels = (image.detach() * 255.0).round().to(torch.uint8).cpu()
    decoded = decode_jpeg(encode_jpeg(pixels, quality=int(quality)))
    return decoded.to(image.device, image.dtype) / 255.0


def _json_range(value):
    return None if value is None else [float(value[0]), float(value[1])]


class _Degradation(nn.Module):
    """Checks the input and resolves the generators; subclasses implement :meth:`degrade`."""

    @torch.no_grad()
    def forward(self, hq: Tensor, generator: GeneratorLike = None) -> Degraded:
        check_images(hq)
        return self.degrade(hq, per_image_generators(generator, hq.shape[0]))

    def degrade(self, hq: Tensor, generators: list[torch.Generator]) -> Degraded:
        raise NotImplementedError


class BlindDegradation(_Degradation):
    """GFPGAN's blind degradation: blur, downsample by r, Gaussian noise, JPEG, resize back.

    Defaults are GFPGAN's training settings: a 41-tap Gaussian, isotropic or anisotropic with
    probability 0.5 each, sigma in [0.1, 10] (anisotropic: both sigmas drawn independently and a
    rotation in [-pi, pi]); bilinear resize to ``size / r`` with r in [0.8, 8] (r < 1 enlarges);
    colour Gaussian noise with sigma in [0, 20] on the 0..255 scale, clipped to [0, 1]; JPEG
    quality in [60, 100]; bilinear resize back to the input size, rounded to 8 bits as GFPGAN
    does. Each range is ``(min, max)``; ``None`` switches that step off, and ``(a, a)`` fixes it.

    ``antialias`` filters before shrinking (``F.interpolate(antialias=True)``); GFPGAN's
    ``cv2.resize`` does not, so pass ``False`` for its exact aliasing.

    ``reference_size``: the blur sigmas and kernel size are in pixels of an image this size and
    scale with the input (e.g. ``512`` keeps the look of the paper's 512 px faces on a 64 px
    training image). ``None`` applies them as given, in the input's pixels. Parameters report
    the sigmas actually applied, in the input's pixels.
    """

    def __init__(self, kernel_size: int = 41, sigma: Range | None = (0.1, 10.0), iso_prob: float = 0.5,
                 downscale: Range | None = (0.8, 8.0), noise: Range | None = (0.0, 20.0),
                 jpeg_quality: tuple[int, int] | None = (60, 100), antialias: bool = True,
                 reference_size: int | None = None):
        super().__init__()
        if not (isinstance(kernel_size, int) and kernel_size >= 1 and kernel_size % 2 == 1):
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size!r}")
        if not 0.0 <= iso_prob <= 1.0:
            raise ValueError(f"iso_prob must be in [0, 1], got {iso_prob}")
        if reference_size is not None and not (isinstance(reference_size, int) and reference_size > 0):
            raise ValueError(f"reference_size must be a positive int or None, got {reference_size!r}")
        check_range("sigma", sigma, 0.0, low_open=True)
        check_range("downscale", downscale, 0.0, low_open=True)
        check_range("noise", noise, 0.0)
        check_range("jpeg_quality", jpeg_quality, 1, 100)
        if jpeg_quality is not None and not all(isinstance(q, int) for q in jpeg_quality):
            raise ValueError(f"jpeg_quality must be a pair of ints, got {jpeg_quality!r}")
        self.kernel_size, self.sigma, self.iso_prob = kernel_size, sigma, iso_prob
        self.downscale, self.noise, self.jpeg_quality = downscale, noise, jpeg_quality
        self.antialias, self.reference_size = antialias, reference_size

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, sigma={self.sigma}, iso_prob={self.iso_prob}, "
                f"downscale={self.downscale}, noise={self.noise}, jpeg_quality={self.jpeg_quality}, "
                f"antialias={self.antialias}, reference_size={self.reference_size}")

    def config(self) -> dict:
        """The configured ranges, JSON-friendly (for logs and captions)."""
        return dict(kernel_size=self.kernel_size, sigma=_json_range(self.sigma), iso_prob=self.iso_prob,
                    downscale=_json_range(self.downscale), noise=_json_range(self.noise),
                    jpeg_quality=None if self.jpeg_quality is None else list(self.jpeg_quality),
                    antialias=self.antialias, reference_size=self.reference_size)

    def _blur_scale(self, height: int, width: int) -> tuple[float, int]:
        """Sigma multiplier and odd kernel size for an input of this size."""
        if self.reference_size is None:
            return 1.0, self.kernel_size
        scale = min(height, width) / self.reference_size
        return scale, max(3, 2 * round((self.kernel_size * scale - 1) / 2) + 1)

    def draw(self, generator: torch.Generator, height: int, width: int) -> dict:
        """The parameters for one image, in a fixed draw order."""
        params: dict = {}
        if self.sigma is not None:
            scale, _ = self._blur_scale(height, width)
            isotropic = draw_uniform(generator, 0.0, 1.0) < self.iso_prob
            sigma_x = draw_uniform(generator, *self.sigma)
            sigma_y = sigma_x if isotropic else draw_uniform(generator, *self.sigma)
            rotation = 0.0 if isotropic else draw_uniform(generator, -math.pi, math.pi)
            params.update(blur="isotropic" if isotropic else "anisotropic",
                          sigma_x=sigma_x * scale, sigma_y=sigma_y * scale, rotation=rotation)
        if self.downscale is not None:
            factor = draw_uniform(generator, *self.downscale)
            low_size = [max(1, int(height // factor)), max(1, int(width // factor))]  # cv2-style floor
            params.update(downscale=factor, low_size=low_size)
        if self.noise is not None:
            params["noise"] = draw_uniform(generator, *self.noise)
        if self.jpeg_quality is not None:
            params["jpeg_quality"] = draw_integer(generator, *self.jpeg_quality)
        return params

    def degrade(self, hq: Tensor, generators: list[torch.Generator]) -> Degraded:
        height, width = hq.shape[-2:]
        params = [self.draw(g, height, width) for g in generators]
        images = self._blur(hq, params) if self.sigma is not None else hq
        outputs = []
        for image, p, generator in zip(images, params, generators):
            image = image[None]
            if self.downscale is not None:
                image = F.interpolate(image, size=p["low_size"], mode="bilinear", align_corners=False,
                                      antialias=self.antialias)
            if self.noise is not None:
                noise = torch.randn(image.shape, generator=generator, device=generator.device)
                image = (image + noise.to(image.device, image.dtype) * (p["noise"] / 255.0)).clamp(0.0, 1.0)
            if self.jpeg_quality is not None:
                image = jpeg(image[0], p["jpeg_quality"])[None]
            if image.shape[-2:] != (height, width):
                image = F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)
            outputs.append(image)
        lq = (torch.cat(outputs) * 255.0).round() / 255.0
        return Degraded(lq=lq, params=params)

    def _blur(self, images: Tensor, params: list[dict]) -> Tensor:
        """Per-image kernels in one ``kornia.filters.filter2d`` call (reflect borders, like cv2)."""
        _, size = self._blur_scale(*images.shape[-2:])
        if size // 2 >= min(images.shape[-2:]):
            raise ValueError(f"a {size}-tap blur kernel needs images larger than {size // 2} px, got "
                             f"{tuple(images.shape[-2:])}; lower kernel_size or set reference_size")

        def column(key):
            return torch.tensor([p[key] for p in params], dtype=images.dtype, device=images.device)

        kernels = gaussian_kernels(column("sigma_x"), column("sigma_y"), column("rotation"), size)
        return kornia.filters.filter2d(images, kernels, border_type="reflect").clamp(0.0, 1.0)


class SuperResolution(_Degradation):
    """Face super-resolution input: bicubic down by ``scale``, then bicubic back up to the input
    size, clipped to [0, 1] (bicubic overshoots). Both resizes use ``antialias=True``, which in
    PyTorch is the a = -0.5 cubic of PIL and Matlab's ``imresize`` (the usual SR benchmark
    kernel) in both directions. Deterministic: the generator is accepted for a uniform
    interface and unused. The paper evaluates x4, x8 and x16."""

    def __init__(self, scale: int = 4):
        super().__init__()
        if not (isinstance(scale, int) and scale >= 2):
            raise ValueError(f"scale must be an int >= 2 (the paper uses 4, 8, 16), got {scale!r}")
        self.scale = scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"

    def degrade(self, hq: Tensor, generators: list[torch.Generator]) -> Degraded:
        height, width = hq.shape[-2:]
        if height % self.scale or width % self.scale:
            raise ValueError(f"image size {height}x{width} is not divisible by the SR scale {self.scale}")
        low_size = (height // self.scale, width // self.scale)
        low = F.interpolate(hq, size=low_size, mode="bicubic", align_corners=False, antialias=True)
        lq = F.interpolate(low, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
        lq = lq.clamp(0.0, 1.0)
        return Degraded(lq=lq, params=[{"scale": self.scale, "low_size": list(low_size)} for _ in generators])


class InpaintingMask(_Degradation):
    """Free-form strokes and boxes removed from the face; ``lq = hq`` outside the holes and
    ``fill`` inside. The mask is 1 where a pixel is missing.

    Strokes follow DeepFill v2's free-form masks: a random walk of ``vertices`` straight
    segments, each drawn as a thick line with round ends and joints. Lengths and widths are
    fractions of the image's shorter side, so masks look the same at every resolution.
    Written by hand because neither torchvision nor kornia draws free-form masks; every
    stroke is rasterised at once as distances from the pixel grid to its segments, so it runs
    on any device.
    """

    def __init__(self, strokes: tuple[int, int] = (1, 4), vertices: tuple[int, int] = (4, 10),
                 stroke_length: Range = (0.05, 0.2), stroke_width: Range = (0.03, 0.08),
                 boxes: tuple[int, int] = (0, 2), box_size: Range = (0.1, 0.35), fill: float = 0.0):
        super().__init__()
        for name, value in (("strokes", strokes), ("vertices", vertices), ("boxes", boxes)):
            check_range(name, value, 0, optional=False)
            if not all(isinstance(v, int) for v in value):
                raise ValueError(f"{name} must be a pair of ints, got {value!r}")
        if vertices[0] < 2:
            raise ValueError(f"a stroke needs at least 2 vertices, got vertices={vertices!r}")
        check_range("stroke_length", stroke_length, 0.0, optional=False)
        check_range("stroke_width", stroke_width, 0.0, 1.0, optional=False, low_open=True)
        check_range("box_size", box_size, 0.0, 1.0, optional=False, low_open=True)
        if not 0.0 <= fill <= 1.0:
            raise ValueError(f"fill must be in [0, 1], got {fill}")
        self.strokes, self.vertices, self.boxes = strokes, vertices, boxes
        self.stroke_length, self.stroke_width = stroke_length, stroke_width
        self.box_size, self.fill = box_size, fill

    def extra_repr(self) -> str:
        return (f"strokes={self.strokes}, vertices={self.vertices}, stroke_length={self.stroke_length}, "
                f"stroke_width={self.stroke_width}, boxes={self.boxes}, box_size={self.box_size}, "
                f"fill={self.fill}")

    def draw_mask(self, generator: torch.Generator, height: int, width: int, device) -> tuple[Tensor, dict]:
        """One ``(H, W)`` mask and its parameters."""
        side = min(height, width)
        ys = torch.arange(height, device=device, dtype=torch.float32) + 0.5
        xs = torch.arange(width, device=device, dtype=torch.float32) + 0.5
        grid_y, grid_x = ys[:, None], xs[None, :]
        mask = torch.zeros(height, width, dtype=torch.bool, device=device)
        num_strokes = draw_integer(generator, *self.strokes)
        for _ in range(num_strokes):
            points = [(draw_uniform(generator, 0, width), draw_uniform(generator, 0, height))]
            for _ in range(draw_integer(generator, *self.vertices) - 1):
                angle = draw_uniform(generator, -math.pi, math.pi)
                length = draw_uniform(generator, *self.stroke_length) * side
                x, y = points[-1]
                points.append((min(max(x + length * math.cos(angle), 0.0), width),
                               min(max(y + length * math.sin(angle), 0.0), height)))
            radius = draw_uniform(generator, *self.stroke_width) * side / 2
            for (ax, ay), (bx, by) in zip(points[:-1], points[1:]):
                dx, dy = bx - ax, by - ay
                t = (((grid_x - ax) * dx + (grid_y - ay) * dy) / max(dx * dx + dy * dy, 1e-12)).clamp(0, 1)
                mask |= (grid_x - ax - t * dx) ** 2 + (grid_y - ay - t * dy) ** 2 <= radius**2
        num_boxes = draw_integer(generator, *self.boxes)
        for _ in range(num_boxes):
            box_h = max(1, round(draw_uniform(generator, *self.box_size) * height))
            box_w = max(1, round(draw_uniform(generator, *self.box_size) * width))
            top = draw_integer(generator, 0, height - box_h)
            left = draw_integer(generator, 0, width - box_w)
            mask[top : top + box_h, left : left + box_w] = True
        params = {"strokes": num_strokes, "boxes": num_boxes, "coverage": mask.float().mean().item(),
                  "fill": float(self.fill)}
        return mask, params

    def degrade(self, hq: Tensor, generators: list[torch.Generator]) -> Degraded:
        height, width = hq.shape[-2:]
        drawn = [self.draw_mask(g, height, width, hq.device) for g in generators]
        mask = torch.stack([m for m, _ in drawn])[:, None].to(hq.dtype)
        lq = hq * (1 - mask) + self.fill * mask
        return Degraded(lq=lq, params=[p for _, p in drawn], mask=mask)


def describe(params: dict) -> str:
    """A short caption for one image's parameters.

    For example ``aniso σ 3.1×0.8 ∠40° · ↓2.5 · noise 7 · JPEG 81`` or ``SR ×8 (32×32 px)``.
    """
    parts = []
    if "blur" in params:
        if params["blur"] == "isotropic":
            parts.append(f"blur σ {params['sigma_x']:.1f}")
        else:
            parts.append(f"aniso σ {params['sigma_x']:.1f}×{params['sigma_y']:.1f} "
                         f"∠{math.degrees(params['rotation']):.0f}°")
    if "downscale" in params:
        parts.append(f"↓{params['downscale']:.1f}")
    if "noise" in params:
        parts.append(f"noise {params['noise']:.0f}")
    if "jpeg_quality" in params:
        parts.append(f"JPEG {params['jpeg_quality']}")
    if "scale" in params:
        parts.append(f"SR ×{params['scale']} ({params['low_size'][0]}×{params['low_size'][1]} px)")
    if "coverage" in params:
        strokes, boxes = params["strokes"], params["boxes"]
        parts.append(f"{strokes} stroke{'s' * (strokes != 1)}, {boxes} box{'es' * (boxes != 1)}, "
                     f"{100 * params['coverage']:.0f}% missing")
    return " · ".join(parts) or "no degradation"


#: Names accepted by :func:`build_degradation` (configs and the CLI use these).
DEGRADATIONS = ("blind", "sr4", "sr8", "sr16", "inpaint")


def build_degradation(name: str = "blind", **kwargs) -> nn.Module:
    """A degradation by name: ``blind``, ``sr4``, ``sr8``, ``sr16`` or ``inpaint``; ``kwargs``
    go to the class (e.g. ``build_degradation("blind", noise=(0, 10))``)."""
    if name == "blind":
        return BlindDegradation(**kwargs)
    if name == "inpaint":
        return InpaintingMask(**kwargs)
    if name in ("sr4", "sr8", "sr16"):
        return SuperResolution(int(name[2:]), **kwargs)
    raise ValueError(f"unknown degradation {name!r}; choose one of {', '.join(DEGRADATIONS)}")
