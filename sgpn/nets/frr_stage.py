"""One stage of the kit's FRRffusion as an inference module: FMAR, HFDG or the U-Net baseline,
with what it reads and what it outputs.

:class:`FRRStage` is what :func:`sgpn.load` returns for a retouching-reversal checkpoint; the
training module (:class:`sgpn.training.FRRModule`) is a stage too, with its optimiser and steps
on top. Images are ``[-1, 1]`` inside the networks and ``[0, 1]`` outside.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgpn.images import batch_images, to_image, to_network
from sgpn.nets.fmar import FMAR, UNetBaseline, resize
from sgpn.nets.hfdg import HFDG

#: The stages, as checkpoints name them.
STAGES = ("fmar", "hfdg", "unet")


def check_pair(batch: Mapping[str, Any], size: int) -> tuple[Tensor, Tensor]:
    """``batch["retouched"]`` and ``batch["raw"]``: ``(B, 3, size, size)`` in [0, 1], as many
    of one as of the other, or a clear error."""
    retouched, raw = batch_images(batch, "retouched", size), batch_images(batch, "raw", size)
    if len(retouched) != len(raw):
        raise ValueError(f"the batch holds {len(retouched)} retouched faces but {len(raw)} raw ones")
    return retouched, raw


def coarse_stand_in(raw: Tensor, low_size: int, noise: float = 0.03) -> Tensor:
    """What HFDG trains on when no FMAR samples are given: the raw face at FMAR's size (plus a
    little Gaussian noise, FMAR is not exact), brought back up to full size."""
    low = resize(raw, low_size)
    low = low + noise * torch.rand(len(raw), 1, 1, 1, device=raw.device) * torch.randn_like(low)
    return resize(low.clamp(-1, 1), raw.shape[-1]).clamp(-1, 1)


class FRRStage(nn.Module):
    """One stage of the kit's FRRffusion (``stage``): ``"fmar"``, ``"hfdg"`` or the ``"unet"``
    baseline, for ``size`` px faces; ``low_size``: FMAR's resolution; ``network``: the stage
    network's options; ``sample_steps``: FMAR's DDIM steps."""

    def __init__(self, stage: str = "fmar", size: int = 64, low_size: int = 32, network: dict | None = None,
                 sample_steps: int = 20):
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if size % low_size:
            raise ValueError(f"size ({size}) must be a multiple of low_size ({low_size})")
        options = dict(network or {})
        if stage == "fmar" and low_size * options.get("condition_scale", 1) > size:
            raise ValueError(f"FMAR at {low_size} px cannot read the retouched face at "
                             f"{options['condition_scale']} x {low_size} px: the faces are {size} px")
        self.stage, self.size, self.low_size, self.sample_steps = stage, size, low_size, sample_steps
        self.net = {"fmar": lambda: FMAR(size=low_size, **options), "hfdg": lambda: HFDG(**options),
                    "unet": lambda: UNetBaseline(size=size, **options)}[stage]()

    def coarse_input(self, batch: Mapping[str, Any], raw: Tensor, noise: float) -> Tensor:
        """HFDG's coarse face at full size, in [-1, 1]: FMAR's sample of each pair when the
        batch carries one (``coarse``, :class:`~sgpn.retouch.pairs.RetouchDataModule`'s
        ``coarse_from``), else :func:`coarse_stand_in` of the raw face."""
        if "coarse" not in batch:
            return coarse_stand_in(raw, self.low_size, noise)
        coarse = batch_images(batch, "coarse", self.low_size)
        return resize(to_network(coarse), self.size).clamp(-1, 1)

    def lift(self, coarse_up: Tensor, retouched: Tensor) -> Tensor:
        """HFDG's full-size face from the upsampled coarse face and the retouched face, both in
        [-1, 1] (the retouched face's details are those above ``low_size``)."""
        return self.net(coarse_up, retouched, resize(resize(retouched, self.low_size), retouched.shape[-1]))

    def loss(self, batch: Mapping[str, Any]) -> Tensor:
        retouched, raw = (to_network(x) for x in check_pair(batch, self.size))
        stage, low = self.stage, self.low_size
        if stage == "fmar":
            return self.net.loss(resize(raw, low), resize(retouched, self.net.condition_size))
        if stage == "hfdg":
            return F.l1_loss(self.lift(self.coarse_input(batch, raw, noise=0.03), retouched), raw)
        return F.l1_loss(self.net(retouched), raw)

    @torch.no_grad()
    def output(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> Tensor:
        """The stage's own result on a batch of pairs, in [0, 1] at full size: FMAR's sample
        (upsampled), HFDG's details on its training input (:meth:`coarse_input`, without the
        stand-in's noise), the baseline's restoration."""
        retouched, raw = (to_network(x) for x in check_pair(batch, self.size))
        stage = self.stage
        if stage == "fmar":
            coarse, _ = self.net.sample(resize(retouched, self.net.condition_size), self.sample_steps,
                                        generator)
            return to_image(resize(coarse, retouched.shape[-1]))
        if stage == "hfdg":
            return to_image(self.lift(self.coarse_input(batch, raw, noise=0.0), retouched))
        return to_image(self.net(retouched))
