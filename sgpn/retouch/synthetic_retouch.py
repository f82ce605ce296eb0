"""Synthetic face retouching: what beauty filters do to a face, with the raw face kept exactly.

Face retouching reversal (FRRffusion) learns to undo a commercial beauty filter from pairs of
raw and retouched faces (deepFRR: 50,000 of them, retouched by an online API). The kit draws such
pairs from its synthetic faces, the raw face being the ground truth, with a retouch made of the
five things beauty filters do:

* ``smooth``: skin smoothing. kornia's bilateral blur (edge-preserving) blended in on the skin
  only (the face minus eyes, brows, lips and occluders): freckles, stubble, pores and blemishes
  go, the outline and the features stay;
* ``slim`` and ``jaw``: face slimming and jaw narrowing. A horizontal squeeze of the cheeks and
  of the jaw towards the face's midline that fades out past the face, the "liquify" warp of
  beauty apps (a warp rather than the morphable model, so that it works on any face, and like
  the apps it bends the background next to the jaw);
* ``eyes``: eye enlargement, a radial magnification about each eye's centre;
* ``brighten``: skin brightening and whitening, lighter and paler towards pink;
* ``lips``: a lipstick colour, shaded like the lips it covers.

Each part has a strength drawn per image from a range (``None`` switches a part off), so a
retouch is reproducible from a seed and its parameters are returned (JSON-friendly, captioned
by :func:`describe`) as the degradations' are. Every part works in the face's own frame
(:class:`~sgpn.data.procedural.FaceFrame`, from the 68 landmarks): it follows the face's
position, size and roll.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgpn.data.degradations import GeneratorLike, check_range, draw_integer, draw_uniform, per_image_generators
from sgpn.data.procedural import FaceFrame, blur, sd_capsule, sd_ellipse, smoothstep
from sgpn.images import check_images

#: The parts of a retouch, in the order they are applied (colour first, then the warp).
PARTS = ("smooth", "brighten", "lips", "slim", "jaw", "eyes")
#: Default strength ranges: smoothing and lipstick are blend weights, slim and jaw the fraction
#: by which the cheeks and jaw narrow, eyes the magnification at the eye's centre minus one,
#: brighten the blend weight towards pale skin.
DEFAULT_RANGES = {"smooth": (0.6, 1.0), "brighten": (0.1, 0.5), "lips": (0.2, 0.7),
                  "slim": (0.02, 0.08), "jaw": (0.02, 0.08), "eyes": (0.04, 0.14)}
#: The most each part may be asked for: beyond these the warps fold or the colours saturate.
LIMITS = {"smooth": 1.0, "brighten": 1.0, "lips": 1.0, "slim": 0.15, "jaw": 0.15, "eyes": 0.25}
LIPSTICKS = {"crimson": (0.72, 0.08, 0.18), "coral": (0.90, 0.38, 0.34), "rose": (0.80, 0.36, 0.46),
             "plum": (0.52, 0.10, 0.24), "nude": (0.78, 0.50, 0.44)}
#: The pale pink that whitening pulls the skin towards (times the skin's lifted lightness).
PALE = (1.0, 0.93, 0.90)


@dataclass
class Retouched:
    """The output of :class:`Retouch`."""

    image: Tensor  #: ``(B, 3, H, W)`` in ``[0, 1]``
    params: list[dict]  #: per image, the strengths used and the lipstick's name


@dataclass
class FaceRegions:
    """Soft masks ``(1, H, W)`` of one face, in ``[0, 1]``."""

    skin: Tensor
    lips: Tensor


#: Skin is also told by its colour, as beauty filters do: hair over the forehead lies inside the
#: face's outline. Pixels this far (RGB distance, after a blur of a tenth of the eye distance)
#: from the face's median skin colour count half.
SKIN_COLOUR_SIGMA = 0.12


def face_regions(frame: FaceFrame, image: Tensor, face_mask: Tensor, occluder_mask: Tensor | None = None) -> FaceRegions:
    """Skin (the face minus eyes, brows, lips and occluders, weighted by closeness to the
    skin's median colour) and lips, from the landmarks, feathered by a pixel."""
    p = frame.points
    a, b = frame.a, frame.b
    features = torch.zeros_like(a)
    for eye in (p[36:42], p[42:48]):
        width = (eye[:, 0].max() - eye[:, 0].min()).item()
        distance = sd_ellipse(a, b, eye.mean(0).tolist(), (0.75 * width, 0.5 * width))
        features = torch.maximum(features, frame.coverage(distance)[0])
    for brow in (p[17:22], p[22:27]):
        for start, end in zip(brow[:-1], brow[1:]):
            features = torch.maximum(features, frame.coverage(sd_capsule(a, b, start.tolist(), end.tolist(), 0.09))[0])
    mouth = p[48:60]
    centre = mouth.mean(0).tolist()
    radii = (0.55 * (mouth[:, 0].max() - mouth[:, 0].min()).item(), 0.6 * (mouth[:, 1].max() - mouth[:, 1].min()).item() + 0.03)
    outer = frame.coverage(sd_ellipse(a, b, centre, radii))[0]
    inner = p[60:68]
    gap = (inner[5:8, 1].mean() - inner[1:4, 1].mean()).item()  # lower inner lip minus upper
    opening = torch.zeros_like(a)
    if gap > 0.02:  # an open mouth: its inside is not lipstick
        inner_radii = (0.5 * (inner[:, 0].max() - inner[:, 0].min()).item(), 0.5 * gap)
        opening = frame.coverage(sd_ellipse(a, b, inner.mean(0).tolist(), inner_radii))[0]
    lips = outer * (1 - opening)
    skin = face_mask[0] * (1 - torch.maximum(features, outer))
    if occluder_mask is not None:
        skin = skin * (1 - occluder_mask[0])
    if (skin > 0.5).any():  # on a blurred copy: freckles and stubble are skin, hair is not
        local = kornia.filters.gaussian_blur2d(image[None], (7, 7), (0.1 * frame.unit, 0.1 * frame.unit))[0]
        reference = local[:, skin > 0.5].median(1).values[:, None, None]
        distance = (local - reference).square().sum(0)
        skin = skin * torch.exp2(-distance / SKIN_COLOUR_SIGMA ** 2)
    return FaceRegions(skin=blur(skin[None]).clamp(0, 1), lips=blur((lips * face_mask[0])[None]).clamp(0, 1))


def smooth_skin(image: Tensor, skin: Tensor, strength: float, unit: float) -> Tensor:
    """Bilateral blur blended in on the skin with weight ``strength``: spatial sigma 7 % of the
    eye distance, colour sigma 0.25, wide enough to take stubble and freckles (contrast 0.1-0.3)
    but not the face's shading."""
    if strength <= 0:
        return image
    sigma = max(0.07 * unit, 0.5)
    size = 2 * math.ceil(2 * sigma) + 1
    smoothed = kornia.filters.bilateral_blur(image[None], (size, size), 0.25, (sigma, sigma))[0]
    return image + strength * skin * (smoothed - image)


def brighten_skin(image: Tensor, skin: Tensor, strength: float) -> Tensor:
    """Lighter (half-way to white) and paler (towards :data:`PALE` at the lifted lightness) skin."""
    if strength <= 0:
        return image
    lifted = image + 0.5 * (1 - image)
    lightness = (lifted * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0, keepdim=True)
    pale = 0.65 * lifted + 0.35 * lightness * torch.tensor(PALE)[:, None, None]
    return image + strength * skin * (pale.clamp(0, 1) - image)


def paint_lips(image: Tensor, lips: Tensor, strength: float, colour: tuple[float, float, float]) -> Tensor:
    """Lipstick of ``colour``, shaded by the lips' own lightness, blended with ``strength``."""
    if strength <= 0 or lips.sum() == 0:
        return image
    lightness = image.mean(0, keepdim=True)
    shade = lightness / ((lightness * lips).sum() / lips.sum()).clamp_min(1e-3)
    painted = (torch.tensor(colour)[:, None, None] * shade).clamp(0, 1)
    return image + strength * lips * (painted - image)


def warp_grid(frame: FaceFrame, slim: float, jaw: float, eyes: float) -> Tensor:
    """Where each output pixel reads the input, ``(H, W, 2)`` in ``grid_sample``'s [-1, 1]
    (pixel centres at integer coordinates, as the landmarks are).

    Slim and jaw scale the distance to the face's midline by ``1 + s·w(b)·g(a)``: ``w`` picks
    the cheek rows (eyes to mouth) or the jaw rows (mouth to chin), ``g`` is 1 on the face and
    fades to 0 by 1.6 times that side's half-width, so the output reads from further out and
    the face narrows.
    Eyes shrink the distance to each eye centre by ``1 - e·(1 - (r/R)²)²`` inside R."""
    p, a, b = frame.points, frame.a.clone(), frame.b.clone()
    mid = p[27:31, 0].mean()
    nose, mouth, chin = p[30, 1], p[48:68, 1].mean(), p[8, 1]
    offset = frame.a - mid
    # each side's half-width, to its outer jaw landmark: a turned face is wider on the near side
    half_width = torch.where(offset < 0, mid - p[0, 0], p[16, 0] - mid).clamp_min(0.05)
    inside = 1 - smoothstep(1.0, 1.6, offset.abs() / half_width)
    cheeks = smoothstep(0.15, 0.45, frame.b / nose) * (1 - smoothstep(0.0, 1.0, (frame.b - nose) / (mouth - nose)))
    lower = smoothstep(0.3, 1.0, (frame.b - nose) / (mouth - nose)) * (1 - smoothstep(1.0, 1.3, frame.b / chin))
    a = a + offset * inside * (slim * cheeks + jaw * lower)
    for eye in (p[36:42], p[42:48]):
        centre = eye.mean(0)
        radius = 1.1 * (eye[:, 0].max() - eye[:, 0].min())
        du, dv = frame.a - centre[0], frame.b - centre[1]
        falloff = (1 - (du.square() + dv.square()) / radius.square()).clamp_min(0).square()
        a, b = a - eyes * falloff * du, b - eyes * falloff * dv
    pixels = frame.origin + frame.unit * (a[..., None] * frame.ex + b[..., None] * frame.ey)
    size = pixels.new_tensor([frame.a.shape[1], frame.a.shape[0]])
    return (2 * pixels + 1) / size - 1


class Retouch(nn.Module):
    """A beauty filter with random strengths: ``retouch(raw, landmarks, face_mask)`` ->
    :class:`Retouched`.

    ``raw``: ``(B, 3, S, S)`` in [0, 1]; ``landmarks``: ``(B, 68, 2)`` in pixels;
    ``face_mask`` (and optionally ``occluder_mask``): ``(B, 1, S, S)``, where the face is (and
    where something covers it), as :class:`~sgpn.data.synthetic.SyntheticFaces` gives them. Each part's
    strength is drawn uniformly from its range (keyword per part of :data:`PARTS`; ``None``
    switches it off); :meth:`apply` retouches with given parameters (sliders, captions).
    """

    def __init__(self, **ranges: tuple[float, float] | None):
        super().__init__()
        unknown = sorted(set(ranges) - set(PARTS))
        if unknown:
            raise ValueError(f"unknown retouch part(s) {unknown}; the parts are {', '.join(PARTS)}")
        self.ranges = {**DEFAULT_RANGES, **ranges}
        for name, value in self.ranges.items():
            check_range(name, value, 0.0, LIMITS[name])

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={value}" for name, value in self.ranges.items())

    def draw(self, generator: torch.Generator) -> dict:
        """One image's parameters: a strength per part (0 when switched off) and a lipstick."""
        params = {name: round(draw_uniform(generator, *span), 4) if span else 0.0 for name, span in self.ranges.items()}
        params["lipstick"] = list(LIPSTICKS)[draw_integer(generator, 0, len(LIPSTICKS) - 1)]
        return params

    def forward(self, raw: Tensor, landmarks: Tensor, face_mask: Tensor, occluder_mask: Tensor | None = None,
                generator: GeneratorLike = None) -> Retouched:
        generators = per_image_generators(generator, len(raw))
        return self.apply(raw, landmarks, face_mask, [self.draw(g) for g in generators], occluder_mask)

    @staticmethod
    def apply(raw: Tensor, landmarks: Tensor, face_mask: Tensor, params: list[dict],
              occluder_mask: Tensor | None = None) -> Retouched:
        """Retouch with the given per-image ``params`` (parts left out are not applied)."""
        check_images(raw, "raw")
        batch, _, height, width = raw.shape
        if height != width:
            raise ValueError(f"raw faces must be square crops, got {height} x {width}")
        if tuple(landmarks.shape) != (batch, 68, 2):
            raise ValueError(f"landmarks must be (B, 68, 2) = ({batch}, 68, 2) pixels, got {tuple(landmarks.shape)}")
        if not torch.isfinite(landmarks).all():
            raise ValueError("landmarks contain NaN or Inf")
        for name, mask in (("face_mask", face_mask), ("occluder_mask", occluder_mask)):
            if mask is not None and tuple(mask.shape) != (batch, 1, height, width):
                raise ValueError(f"{name} must be (B, 1, H, W) = ({batch}, 1, {height}, {width}), got {tuple(mask.shape)}")
        if len(params) != batch:
            raise ValueError(f"got {len(params)} parameter sets for a batch of {batch} faces")
        out = []
        for i, (image, p) in enumerate(zip(raw.float().cpu(), params)):
            frame = FaceFrame(landmarks[i].float().cpu(), width)
            regions = face_regions(frame, image, face_mask[i].float().cpu(),
                                   None if occluder_mask is None else occluder_mask[i].float().cpu())
            image = smooth_skin(image, regions.skin, p.get("smooth", 0.0), frame.unit)
            image = brighten_skin(image, regions.skin, p.get("brighten", 0.0))
            image = paint_lips(image, regions.lips, p.get("lips", 0.0), LIPSTICKS[p.get("lipstick", "crimson")])
            strengths = (p.get("slim", 0.0), p.get("jaw", 0.0), p.get("eyes", 0.0))
            if any(strengths):
                image = F.grid_sample(image[None], warp_grid(frame, *strengths)[None], mode="bilinear",
                                      padding_mode="border", align_corners=False)[0]
            out.append(image.clamp(0, 1))
        return Retouched(torch.stack(out).to(raw.device, raw.dtype), [dict(p) for p in params])


def each_part(raw: Tensor, landmarks: Tensor, face_mask: Tensor, params: dict,
              occluder_mask: Tensor | None = None) -> dict[str, Tensor]:
    """One face (batch of 1) retouched by each part of ``params`` alone, then by all of them:
    ``{part: (1, 3, S, S)}`` for the parts with a non-zero strength, and ``"all"``."""
    lipstick = {"lipstick": params["lipstick"]} if "lipstick" in params else {}
    parts = {name: {name: params[name], **lipstick} for name in PARTS if params.get(name)}
    return {name: Retouch.apply(raw, landmarks, face_mask, [p], occluder_mask).image
            for name, p in {**parts, "all": params}.items()}


def describe(params: dict) -> str:
    """A short caption: ``smooth 0.82 · brighten 0.31 · lips 0.45 coral · slim 5% · jaw 3% · eyes ×1.09``."""
    parts = [f"{name} {params[name]:.2f}" for name in ("smooth", "brighten") if params.get(name)]
    if params.get("lips"):
        parts.append(f"lips {params['lips']:.2f} {params.get('lipstick', '')}".rstrip())
    parts += [f"{name} {100 * params[name]:.0f}%" for name in ("slim", "jaw") if params.get(name)]
    if params.get("eyes"):
        parts.append(f"eyes ×{1 / (1 - params['eyes']):.2f}")
    return " · ".join(parts) or "untouched"
