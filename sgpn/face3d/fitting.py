"""Fitting the 257 coefficients to one photo by gradient descent through the renderer.

What D3DFR's losses do when a network minimises them over a dataset, done here for the faces at
hand (analysis by synthesis): the render should look like the photo where it covers the face,
its five landmarks should sit on the detector's five points, and the coefficients should stay
plausible under the model's priors. Adam steps through the face model and the kit's
differentiable rasterizer, coarse to fine: pose, position and light first (the shape and
texture held at their start), then everything.

The photometric term is D3DFR's per-pixel colour distance (an L2,1 norm) on the pixels the
render covers, capped per pixel (:attr:`FitSettings.robust_cap`), so that what the model cannot
draw (hair over the brow, glasses, a hand) costs a constant and pulls on nothing. A batch of
faces is fitted at once: each face's loss depends only on its own coefficients.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch

from sgpn.face3d import coefficients
from sgpn.face3d.face_model import RANDOM_STD, FaceModel
from sgpn.face3d.renderer import Renderer

#: The parts Adam moves in the coarse phase, and their step sizes (Adam's step is about the
#: learning rate whatever the gradient's scale, so each is a small fraction of the part's range).
COARSE_PARTS = ("angles", "trans", "gamma")
LEARNING_RATES = {"id": 0.05, "exp": 0.05, "tex": 0.05, "angles": 0.01, "gamma": 0.01, "trans": 0.01}


@dataclass(frozen=True)
class FitSettings:
    """The fit's schedule and loss weights (D3DFR's terms; its weights rescaled to the kit's
    coefficient units: the priors act on coefficients over :data:`RANDOM_STD`)."""

    steps: int = 50
    coarse_steps: int = 15
    photometric: float = 1.0
    robust_cap: float = 0.3  # RGB distance (0..1 units) beyond which a pixel counts as unexplained
    landmarks: float = 2.0  # on the five points, squared distance over the image width squared
    prior_id: float = 1e-3
    prior_exp: float = 1e-3
    prior_tex: float = 1e-3
    white_light: float = 1e-2  # D3DFR's gamma term: light of one colour, the albedo carries the tint


@dataclass
class FitResult:
    """The fitted ``(B, 257)`` coefficients, the mean loss per step and the wall time."""

    coeffs: torch.Tensor
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def five_points(landmarks_68: torch.Tensor) -> torch.Tensor:
    """The detector's five points from 68 iBUG landmarks ``(B, 68, 2)``: the eye centres, the nose
    tip and the mouth corners, in MTCNN's order (left eye, right eye, nose, left and right mouth
    corner, as seen)."""
    return torch.stack([landmarks_68[:, 36:42].mean(1), landmarks_68[:, 42:48].mean(1), landmarks_68[:, 30],
                        landmarks_68[:, 48], landmarks_68[:, 54]], 1)


def fit_losses(face_model: FaceModel, renderer: Renderer, coeffs: torch.Tensor, images: torch.Tensor,
               points: torch.Tensor, settings: FitSettings) -> torch.Tensor:
    """Each face's loss ``(B,)`` for coefficients ``coeffs`` against ``images`` ``(B, 3, S, S)``
    in [0, 1] and their five ``points`` ``(B, 5, 2)`` (pixels of the same images)."""
    size = images.shape[-1]
    face = face_model(coeffs, size)
    render = renderer(face, face_model.faces)
    distance = (render.image - images).norm(dim=1, keepdim=True).clamp(max=settings.robust_cap)
    covered = render.mask.sum((1, 2, 3)).clamp_min(1)
    photometric = (distance * render.mask).sum((1, 2, 3)) / covered
    landmark = (five_points(face.landmarks_2d) - points).pow(2).sum(-1).mean(1) / size**2
    parts = coefficients.split(coeffs)
    gamma = parts.gamma.view(-1, 3, 9)
    prior = (settings.prior_id * (parts.id / RANDOM_STD["id"]).pow(2).sum(1)
             + settings.prior_exp * (parts.exp / RANDOM_STD["exp"]).pow(2).sum(1)
             + settings.prior_tex * (parts.tex / RANDOM_STD["tex"]).pow(2).sum(1)
             + settings.white_light * (gamma - gamma.mean(1, keepdim=True)).pow(2).sum((1, 2)))
    return settings.photometric * photometric + settings.landmarks * landmark + prior


def fit_coefficients(face_model: FaceModel, images: torch.Tensor, points: torch.Tensor,
                     init: torch.Tensor | None = None, settings: FitSettings = FitSettings(),
                     on_step: Callable[[int, int], None] | None = None) -> FitResult:
    """Coefficients for each face of ``images`` ``(B, 3, S, S)`` in [0, 1], framed as D3DFR frames
    faces (the face model's camera at ``S`` px), with its five detector ``points`` ``(B, 5, 2)``.
    ``init``: where to start (e.g. a regressor's coefficients; default the mean face, frontal, in
    D3DFR's default light). ``on_step(done, total)`` is told after every step."""
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must be square RGB (B, 3, S, S), got {tuple(images.shape)}")
    if points.shape != (len(images), 5, 2):
        raise ValueError(f"points must be (B, 5, 2) for {len(images)} images, got {tuple(points.shape)}")
    if not (torch.isfinite(images).all() and torch.isfinite(points).all()):
        raise ValueError("images or points contain NaN or Inf")
    start = torch.zeros(len(images), coefficients.NUM_COEFFS) if init is None else \
        coefficients.check_coefficients(init, "init").detach()
    parts = {name: value.clone().requires_grad_(True) for name, value in coefficients.split(start)._asdict().items()}
    optimizer = torch.optim.Adam([{"params": [tensor], "lr": LEARNING_RATES[name]} for name, tensor in parts.items()])
    renderer = Renderer(images.shape[-1])
    result, began = FitResult(start), time.perf_counter()
    with deterministic():
        for step in range(settings.steps):
            loss = fit_losses(face_model, renderer, coefficients.merge(**parts), images, points, settings)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            if step < settings.coarse_steps:  # pose and light first: the shape and texture wait
                for name, tensor in parts.items():
                    if name not in COARSE_PARTS:
                        tensor.grad = None
            optimizer.step()
            result.losses.append(loss.mean().item())
            if on_step is not None:
                on_step(step + 1, settings.steps)
    result.coeffs = coefficients.merge(**{k: v.detach() for k, v in parts.items()})
    result.seconds = time.perf_counter() - began
    return result


@contextmanager
def deterministic():
    """PyTorch's deterministic algorithms for the block: the render's backward otherwise sums
    gradients in an order that depends on the threads, and over a hundred steps two fits of one
    photo drift apart (by 0.1 in a coefficient, measured); the cost is a few percent."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)

