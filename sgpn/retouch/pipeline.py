"""FRRffusion's two stages together, and FMAR's samples that HFDG trains on.

FMAR (:class:`~sgpn.nets.fmar.FMAR`) samples the low-resolution raw face, HFDG
(:class:`~sgpn.nets.hfdg.HFDG`) lifts it to full size, guided by the retouched face.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sgpn.images import to_image, to_network
from sgpn.nets.fmar import resize
from sgpn.nets.frr_stage import FRRStage


class Reversed(NamedTuple):
    """What :meth:`FRRffusion.reverse` returns; images in [0, 1]."""

    output: Tensor  # (B, 3, S, S) FMAR + HFDG
    coarse: Tensor  # (B, 3, s, s) FMAR's low-resolution face
    coarse_up: Tensor  # (B, 3, S, S) FMAR's face, bicubic up (the "FMAR alone" row)



@torch.no_grad()
def fmar_samples(fmar: FRRStage, pairs, seed: int = 0, batch_size: int = 64, progress: bool = True) -> Tensor:
    """FMAR's sample of every pair's retouched face, ``(N, 3, s, s)`` in [0, 1] at FMAR's size,
    in the order of ``pairs`` (a dataset of pairs). One seeded DDIM draw per face, as
    :meth:`FRRffusion.reverse` makes at inference: what HFDG then trains on (the raw face brought
    down and back is sharper and better aligned than any sample, so a detail stage trained on
    it trusts its coarse input too much)."""
    if fmar.stage != "fmar":
        raise ValueError(f"fmar_samples needs an 'fmar' stage, got {fmar.stage!r}")
    fmar.eval()
    generator, size = torch.Generator().manual_seed(seed), fmar.size
    samples = []
    for start in tqdm(range(0, len(pairs), batch_size), desc=f"FMAR samples of {len(pairs)} faces",
                      disable=not progress):
        retouched = torch.stack([pairs[i]["retouched"] for i in range(start, min(start + batch_size, len(pairs)))])
        if retouched.shape[-1] != size:
            raise ValueError(f"FMAR was trained on {size} px pairs, got {retouched.shape[-1]} px")
        coarse, _ = fmar.net.sample(resize(to_network(retouched), fmar.net.condition_size), fmar.sample_steps,
                                    generator)
        samples.append(to_image(coarse))
    return torch.cat(samples)


class FRRffusion(nn.Module):
    """The two stages together: FMAR samples the low-resolution raw face, HFDG lifts it."""

    def __init__(self, fmar: FRRStage, hfdg: FRRStage, steps: int = 20):
        super().__init__()
        if fmar.stage != "fmar" or hfdg.stage != "hfdg":
            raise ValueError(f"FRRffusion needs an 'fmar' and an 'hfdg' stage, got "
                             f"{fmar.stage!r} and {hfdg.stage!r}")
        if fmar.low_size != hfdg.low_size or fmar.size != hfdg.size:
            raise ValueError("FMAR and HFDG were trained for different sizes")
        self.fmar, self.hfdg, self.steps = fmar.net, hfdg, steps
        self.size, self.low_size = fmar.size, fmar.low_size

    @torch.no_grad()
    def reverse(self, retouched: Tensor, generator: torch.Generator | None = None, samples: int = 1) -> Reversed:
        """Retouched faces ``(B, 3, S, S)`` in [0, 1] -> :class:`Reversed`. ``samples`` > 1: FMAR's
        face is the mean of that many samples, an estimate of the posterior mean (what PSNR
        rewards, at the price of detail); FRRffusion draws one."""
        if retouched.dim() != 4 or tuple(retouched.shape[1:]) != (3, self.size, self.size):
            raise ValueError(f"retouched faces must be (B, 3, {self.size}, {self.size}) in [0, 1], "
                             f"got {tuple(retouched.shape)}")
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        x = to_network(retouched)
        condition = resize(x, self.fmar.condition_size)
        coarse = torch.stack([self.fmar.sample(condition, self.steps, generator)[0] for _ in range(samples)]).mean(0)
        return self.lift(coarse, x)

    @torch.no_grad()
    def lift(self, coarse: Tensor, retouched: Tensor) -> Reversed:
        """HFDG's stage alone: a low-resolution face ``(B, 3, s, s)`` and the retouched faces
        ``(B, 3, S, S)``, both in [-1, 1] -> :class:`Reversed` (for any coarse face, FMAR's or
        another's)."""
        coarse_up = resize(coarse, self.size).clamp(-1, 1)
        return Reversed(to_image(self.hfdg.lift(coarse_up, retouched)), to_image(coarse), to_image(coarse_up))
