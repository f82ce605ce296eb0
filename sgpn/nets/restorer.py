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


class SGPNRestorer(nn.Module):
    """``generator`` (:class:`~sgpn.nets.generator.SGPNGenerator`) fed by ``shape_prior``
    (:class:`~sgpn.nets.shape_prior.ShapePrior`). ``hparams``: how the weights were made (a
    kit checkpoint's hyper-parameters; empty for the release's)."""

    def __init__(self, generator: nn.Module, shape_prior: nn.Module, hparams: dict | None = None):
        super().__init__()
        self.generator, self.shape_prior = generator, shape_prior
        if hparams is not None:
            self.hparams = dict(hparams)

    @property
    def size(self) -> int:
        return self.generator.size

    def forward(self, lq: torch.Tensor):
        """``[-1, 1]`` LQ crops -> (output in [-1, 1], shape prior output, AFFB masks)."""
        prior = self.shape_prior(lq)
        output, masks = self.generator(lq, prior.image, prior.coeffs, return_masks=True)
        return output, prior, masks

    @torch.no_grad()
    def restore(self, lq: torch.Tensor) -> Restored:
        """Restore ``(B, 3, size, size)`` crops in [0, 1] (no gradients, current train/eval mode)."""
        output, prior, masks = self(to_network(lq))
        return Restored(to_image(output), to_image(prior.image), prior.coeffs, masks)
