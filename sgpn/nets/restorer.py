"""SGPN as a restorer: the generator and the shape prior, restoring aligned crops.

:class:`SGPNRestorer` is what inference uses, whatever the weights: a kit checkpoint or the
release's folder (both through :func:`sgpn.load`). The training module
(:class:`sgpn.training.SGPNModule`) is a restorer too, with its discriminator, teacher and
losses on top, so a model restores the same way during and after training.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from sgpn.images import to_image, to_network


class Restored(NamedTuple):
    """What :meth:`SGPNRestorer.restore` returns; images in [0, 1]."""

    output: torch.Tensor  # (B, 3, S, S) restored face
    i3d: torch.Tensor  # (B, 3, S, S) the rendered shape prior I_3d
    coeffs: torch.Tensor  # (B, 257) z_3d
    masks: dict  # {(resolution, block): (B, C, r, r)} AFFB masks (empty without AFFB)


#: Where I_3d's coefficients come from, and how far each moves the regressor's towards a face's
#: true coefficients: the regressor alone (SGPN), halfway (``prior_mix``), the truth (an oracle).
PRIORS = ("regressor", "mix", "oracle")


def prior_weight(prior: str, prior_mix: float = 0.5) -> float:
    """The weight of the true coefficients in I_3d for a ``prior`` of :data:`PRIORS`."""
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    if not 0 < prior_mix < 1:
        raise ValueError(f"prior_mix must lie strictly between 0 and 1, got {prior_mix}")
    return {"regressor": 0.0, "mix": prior_mix, "oracle": 1.0}[prior]


class SGPNRestorer(nn.Module):
    """``generator`` (:class:`~sgpn.nets.generator.SGPNGenerator`) fed by ``shape_prior``
    (:class:`~sgpn.nets.shape_prior.ShapePrior`). ``hparams``: how the weights were made (a
    kit checkpoint's hyper-parameters; empty for the release's), ``checkpoint``: the file they came
    from. A model trained with a better
    prior than its regressor (``prior``: ``mix`` or ``oracle``, synthetic faces only) restores
    with the same prior, so it needs each face's true coefficients."""

    def __init__(self, generator: nn.Module, shape_prior: nn.Module, hparams: dict | None = None,
                 checkpoint: str | None = None):
        super().__init__()
        self.generator, self.shape_prior = generator, shape_prior
        if hparams is not None:
            self.hparams = dict(hparams)
        if checkpoint is not None:
            self.checkpoint = checkpoint

    @property
    def size(self) -> int:
        return self.generator.size

    @property
    def prior_weight(self) -> float:
        """The weight of the true coefficients in I_3d (0 for SGPN's own regressor)."""
        settings = getattr(self, "hparams", {})
        return prior_weight(settings.get("prior", "regressor"), settings.get("prior_mix", 0.5))

    def forward(self, lq: torch.Tensor, true_coeffs: torch.Tensor | None = None):
        """``[-1, 1]`` LQ crops -> (output in [-1, 1], shape prior output, AFFB masks).
        ``true_coeffs``: each face's true coefficients, for a model with a better prior."""
        weight = self.prior_weight
        if weight and true_coeffs is None:
            raise ValueError(f"this model renders I_3d from the faces' true coefficients (prior="
                             f"{self.hparams['prior']!r}): pass them; only synthetic faces have them")
        prior = self.shape_prior(lq, true_coeffs if weight else None, weight)
        output, masks = self.generator(lq, prior.image, prior.coeffs, return_masks=True)
        return output, prior, masks

    @torch.no_grad()
    def restore(self, lq: torch.Tensor, true_coeffs: torch.Tensor | None = None) -> Restored:
        """Restore ``(B, 3, size, size)`` crops in [0, 1] (no gradients, current train/eval mode).
        ``true_coeffs``: needed by (and only used by) a model with a better prior."""
        output, prior, masks = self(to_network(lq), true_coeffs)
        return Restored(to_image(output), to_image(prior.image), prior.coeffs, masks)
