"""Face retouching reversal, FRRffusion's way, at the kit's scale: a diffusion coarse stage and a
transformer detail stage, plus the plain U-Net baseline they are measured against.

* **FMAR** (Facial Morpho-Architectonic Restorer, :class:`FMAR`): a conditional DDPM at low
  resolution (half the kit's size by default). As in FRRffusion's first stage (OpenAI's
  guided-diffusion), the U-Net reads the noisy ``x_t`` beside the retouched face, on a linear β
  schedule of 1000 steps, with an MSE loss. Three choices differ from FRRffusion's, each
  measured (see :class:`FMAR`): it predicts v rather than the noise ε, what it diffuses is what
  the retouch took away (raw − retouched) rather than the raw face, and it can read the
  retouched face at twice its own size, pixel-unshuffled, rather than at its own.
  Built on ``diffusers``: ``UNet2DModel``, ``DDPMScheduler`` to train, ``DDIMScheduler`` (same
  betas) to sample in a few steps on the CPU. It restores the face's contours and colours.
* **HFDG** (:class:`sgpn.hfdg.HFDG`): lifts FMAR's face to full size, guided by the
  full-resolution retouched face, whose details above FMAR's resolution it starts from. It is
  trained on FMAR's own samples of the training faces, drawn once (:func:`fmar_samples`,
  ``RetouchDataModule(coarse_from=...)``), or, without them, on the raw face brought down to
  FMAR's size and back up, lightly perturbed (:func:`coarse_stand_in`). Trained on the
  stand-in it trusts its coarse input, which FMAR's samples do not deserve
  (``configs/frr/hfdg.yaml`` gives the measurement).
* **Baseline** (:class:`UNetBaseline`): a plain U-Net (the same ``UNet2DModel`` family, at full
  size, at time step 0) from the retouched face to the raw one, trained with L1.

Images are ``[-1, 1]`` inside the networks and ``[0, 1]`` outside, as in the rest of the kit.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgpn.hfdg import HFDG
from sgpn.training import check_images, to_image, to_network


def resize(image: Tensor, size: int) -> Tensor:
    """Antialiased bilinear down, bicubic up (the usual SR pair)."""
    if image.shape[-1] == size:
        return image
    if image.shape[-1] > size:
        return F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(image, size=(size, size), mode="bicubic", align_corners=False)


def check_pair(batch: Mapping[str, Any], size: int) -> tuple[Tensor, Tensor]:
    """``batch["retouched"]`` and ``batch["raw"]``: ``(B, 3, size, size)`` in [0, 1], as many
    of one as of the other, or a clear error."""
    retouched, raw = check_images(batch, "retouched", size), check_images(batch, "raw", size)
    if len(retouched) != len(raw):
        raise ValueError(f"the batch holds {len(retouched)} retouched faces but {len(raw)} raw ones")
    return retouched, raw


def unet(size: int, in_channels: int, channels: tuple[int, ...], layers: int, attention_at: int | None):
    """A ``diffusers`` ``UNet2DModel``: one down/up block per entry of ``channels``, with
    self-attention in the block whose resolution is ``attention_at`` (``None``: none)."""
    from diffusers import UNet2DModel

    down, up = [], []
    for level in range(len(channels)):
        attend = attention_at is not None and size >> level == attention_at
        down.append("AttnDownBlock2D" if attend else "DownBlock2D")
        up.insert(0, "AttnUpBlock2D" if attend else "UpBlock2D")
    return UNet2DModel(sample_size=size, in_channels=in_channels, out_channels=3, block_out_channels=tuple(channels),
                       down_block_types=tuple(down), up_block_types=tuple(up), layers_per_block=layers,
                       norm_num_groups=min(32, min(channels)), attention_head_dim=min(channels))


class FMAR(nn.Module):
    """The coarse stage: a DDPM conditioned on the retouched face (``[-1, 1]``, ``size`` px),
    channel-concatenated with ``x_t``.

    ``prediction``: what the U-Net predicts, ``"epsilon"`` (the noise, FRRffusion's choice) or
    ``"v_prediction"`` (v = √ᾱ ε − √(1−ᾱ) x_0, Salimans and Ho), the kit's default. With ε, a
    noisy step's estimate of the face is (x_t − √(1−ᾱ) ε̂) / √ᾱ, which multiplies the
    network's error by up to 1/√ᾱ_T ≈ 160 at the start of sampling: after the kit's 30 CPU
    minutes an ε-model's estimate at t ≥ 600 was worse than 16 dB PSNR (the retouched face
    itself: 27.7 dB) while its ε error was already small, and its samples reached 14.8 dB. v
    asks for the face itself where the noise dominates, so the condition is used at every step.

    ``target``: what is diffused, x_0. ``"raw"`` is the raw face (FRRffusion's choice);
    ``"residual"`` (the kit's default) is what the retouch took away, raw − retouched, times
    ``RESIDUAL_GAIN``, so that everything the retouch left alone (hair, background, pose, most
    of the face) comes from the condition exactly instead of being drawn again. Diffusing the
    raw face, 30 CPU minutes gave samples of 28.66 dB at 32 px, barely above the retouched
    face's own 28.24 dB (256 held-out pairs).

    ``condition_scale``: FMAR reads the retouched face at ``condition_scale`` × ``size``,
    pixel-unshuffled to ``size`` (3 · scale² channels beside x_t), so that the details a
    retouch removes (freckles, stubble) tell it how strong the retouch was. FRRffusion reads it
    at the model's own size (1). In 30 CPU minutes, reading it at 64 px gave 32 px samples of
    35.21 dB against 34.88 at 32 px (256 held-out pairs, same seed and schedule).
    """

    TARGETS = ("raw", "residual")
    #: raw − retouched has a standard deviation of 0.08 on the [-1, 1] scale; times 4 it is
    #: closer to the spread of a face, which the linear schedule was made for
    RESIDUAL_GAIN = 4.0

    PREDICTIONS = ("epsilon", "v_prediction")

    def __init__(self, size: int = 32, channels: tuple[int, ...] = (32, 64, 64), layers: int = 2,
                 attention_at: int | None = 8, timesteps: int = 1000, prediction: str = "v_prediction",
                 target: str = "residual", condition_scale: int = 1):
        super().__init__()
        from diffusers import DDPMScheduler

        if prediction not in self.PREDICTIONS:
            raise ValueError(f"prediction must be one of {self.PREDICTIONS}, got {prediction!r}")
        if target not in self.TARGETS:
            raise ValueError(f"target must be one of {self.TARGETS}, got {target!r}")
        if condition_scale < 1:
            raise ValueError(f"condition_scale must be a positive integer, got {condition_scale!r}")
        self.size, self.target, self.condition_scale = size, target, condition_scale
        #: the size of the retouched face FMAR reads (pixel-unshuffled to ``size`` beside x_t)
        self.condition_size = size * condition_scale
        self.unet = unet(size, 3 + 3 * condition_scale ** 2, channels, layers, attention_at)
        # x_0 estimates are clipped to what x_0 can be: a face in [-1, 1], a residual in [-2, 2] x gain
        clip = 2 * self.RESIDUAL_GAIN if target == "residual" else 1.0
        self.scheduler = DDPMScheduler(num_train_timesteps=timesteps, beta_schedule="linear", clip_sample=True,
                                       clip_sample_range=clip, prediction_type=prediction)

    def condition(self, retouched: Tensor) -> tuple[Tensor, Tensor]:
        """The retouched face at :attr:`condition_size` -> (the same face at FMAR's size, what the
        U-Net reads beside x_t: that face pixel-unshuffled to FMAR's size)."""
        if retouched.dim() != 4 or retouched.shape[-2:] != (self.condition_size, self.condition_size):
            raise ValueError(f"FMAR reads the retouched face at {self.condition_size} px, "
                             f"got {tuple(retouched.shape)}")
        if self.condition_scale == 1:
            return retouched, retouched
        return resize(retouched, self.size), F.pixel_unshuffle(retouched, self.condition_scale)

    def clean(self, raw: Tensor, retouched: Tensor) -> Tensor:
        """x_0 for a pair: the raw face, or the scaled residual (``target``)."""
        return (raw - retouched) * self.RESIDUAL_GAIN if self.target == "residual" else raw

    def face(self, clean: Tensor, retouched: Tensor) -> Tensor:
        """The raw face that x_0 stands for, in [-1, 1] (the inverse of :meth:`clean`)."""
        face = retouched + clean / self.RESIDUAL_GAIN if self.target == "residual" else clean
        return face.clamp(-1, 1)

    def loss(self, raw: Tensor, retouched: Tensor) -> Tensor:
        """The DDPM loss at a random step: MSE between the true and the predicted ε (or v).
        ``raw`` at FMAR's size, ``retouched`` at :attr:`condition_size`."""
        retouched, condition = self.condition(retouched)
        clean = self.clean(raw, retouched)
        noise = torch.randn_like(clean)
        steps = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(raw),), device=raw.device)
        noisy = self.scheduler.add_noise(clean, noise, steps)
        target = noise if self.scheduler.config.prediction_type == "epsilon" else \
            self.scheduler.get_velocity(clean, noise, steps)
        return F.mse_loss(self.unet(torch.cat([noisy, condition], 1), steps).sample, target)

    @torch.no_grad()
    def noised(self, clean: Tensor, timesteps: list[int], generator: torch.Generator | None = None) -> Tensor:
        """The forward process: ``x_t ~ q(x_t | x_0)`` for each of ``timesteps`` with one noise
        draw, ``(T, B, 3, s, s)`` (for pictures of how the signal fades). ``clean`` is x_0:
        :meth:`clean` of a pair."""
        noise = torch.randn(clean.shape, generator=generator).to(clean)
        steps = self.scheduler.config.num_train_timesteps
        if not all(0 <= t < steps for t in timesteps):
            raise ValueError(f"timesteps must lie in 0..{steps - 1}, got {list(timesteps)}")
        return torch.stack([self.scheduler.add_noise(clean, noise, torch.full((len(clean),), t, dtype=torch.long))
                            for t in timesteps])

    @torch.no_grad()
    def sample(self, retouched: Tensor, steps: int = 20, generator: torch.Generator | None = None,
               keep: int = 0) -> tuple[Tensor, list[tuple[int, Tensor, Tensor]]]:
        """Reverse diffusion from pure noise with DDIM (deterministic, η = 0) in ``steps`` steps.
        ``retouched`` at :attr:`condition_size`. Returns the raw-face estimate (FMAR's size)
        and, when ``keep`` > 0, that many ``(t, x_t, face)``
        snapshots spread over the steps, ``face`` being the raw face the step's x̂_0 stands for
        (for pictures of the reverse process)."""
        from diffusers import DDIMScheduler

        retouched, condition = self.condition(retouched)
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(steps, device=retouched.device)
        x = torch.randn(retouched.shape, generator=generator, device="cpu").to(retouched)
        shots = set(torch.linspace(0, steps - 1, keep).round().long().tolist()) if keep else set()
        snapshots = []
        for i, t in enumerate(scheduler.timesteps):
            noise = self.unet(torch.cat([x, condition], 1), t).sample
            step = scheduler.step(noise, t, x, eta=0.0)
            if i in shots:
                snapshots.append((int(t), x.clone(), self.face(step.pred_original_sample, retouched)))
            x = step.prev_sample
        return self.face(x, retouched), snapshots


class UNetBaseline(nn.Module):
    """The plain U-Net: ``retouched + U-Net(retouched)`` at full size, in one pass."""

    def __init__(self, size: int = 64, channels: tuple[int, ...] = (16, 32, 64, 64), layers: int = 2,
                 attention_at: int | None = 8):
        super().__init__()
        self.unet = unet(size, 3, channels, layers, attention_at)
        nn.init.zeros_(self.unet.conv_out.weight)
        nn.init.zeros_(self.unet.conv_out.bias)

    def forward(self, retouched: Tensor) -> Tensor:
        step = torch.zeros(len(retouched), dtype=torch.long, device=retouched.device)
        return retouched + self.unet(retouched, step).sample


def coarse_stand_in(raw: Tensor, low_size: int, noise: float = 0.03) -> Tensor:
    """What HFDG trains on when no FMAR samples are given: the raw face at FMAR's size (plus a
    little Gaussian noise, FMAR is not exact), brought back up to full size."""
    low = resize(raw, low_size)
    low = low + noise * torch.rand(len(raw), 1, 1, 1, device=raw.device) * torch.randn_like(low)
    return resize(low.clamp(-1, 1), raw.shape[-1]).clamp(-1, 1)


class Reversed(NamedTuple):
    """What :meth:`FRRffusion.reverse` returns; images in [0, 1]."""

    output: Tensor  # (B, 3, S, S) FMAR + HFDG
    coarse: Tensor  # (B, 3, s, s) FMAR's low-resolution face
    coarse_up: Tensor  # (B, 3, S, S) FMAR's face, bicubic up (the "FMAR alone" row)


class FRRModule(L.LightningModule):
    """One trainable stage of the kit's FRRffusion (``stage``): ``"fmar"``, ``"hfdg"`` or the
    ``"unet"`` baseline, each with AdamW and a cosine decay, and the same validation (PSNR of
    the stage's output against the raw face). ``low_size``: FMAR's resolution."""

    STAGES = ("fmar", "hfdg", "unet")

    def __init__(self, stage: str = "fmar", size: int = 64, low_size: int = 32, lr: float = 2e-4,
                 network: dict | None = None, sample_steps: int = 20):
        super().__init__()
        if stage not in self.STAGES:
            raise ValueError(f"stage must be one of {self.STAGES}, got {stage!r}")
        if size % low_size:
            raise ValueError(f"size ({size}) must be a multiple of low_size ({low_size})")
        options = dict(network or {})
        if stage == "fmar" and low_size * options.get("condition_scale", 1) > size:
            raise ValueError(f"FMAR at {low_size} px cannot read the retouched face at "
                             f"{options['condition_scale']} x {low_size} px: the faces are {size} px")
        self.save_hyperparameters()
        self.net = {"fmar": lambda: FMAR(size=low_size, **options), "hfdg": lambda: HFDG(**options),
                    "unet": lambda: UNetBaseline(size=size, **options)}[stage]()

    def coarse_input(self, batch: Mapping[str, Any], raw: Tensor, noise: float) -> Tensor:
        """HFDG's coarse face at full size, in [-1, 1]: FMAR's sample of each pair when the
        batch carries one (``coarse``, :class:`~sgpn.data.pairs.RetouchDataModule`'s
        ``coarse_from``), else :func:`coarse_stand_in` of the raw face."""
        if "coarse" not in batch:
            return coarse_stand_in(raw, self.hparams.low_size, noise)
        coarse = check_images(batch, "coarse", self.hparams.low_size)
        return resize(to_network(coarse), self.hparams.size).clamp(-1, 1)

    def lift(self, coarse_up: Tensor, retouched: Tensor) -> Tensor:
        """HFDG's full-size face from the upsampled coarse face and the retouched face, both in
        [-1, 1] (the retouched face's details are those above ``low_size``)."""
        return self.net(coarse_up, retouched, resize(resize(retouched, self.hparams.low_size), retouched.shape[-1]))

    def loss(self, batch: Mapping[str, Any]) -> Tensor:
        retouched, raw = (to_network(x) for x in check_pair(batch, self.hparams.size))
        stage, low = self.hparams.stage, self.hparams.low_size
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
        retouched, raw = (to_network(x) for x in check_pair(batch, self.hparams.size))
        stage = self.hparams.stage
        if stage == "fmar":
            coarse, _ = self.net.sample(resize(retouched, self.net.condition_size), self.hparams.sample_steps,
                                        generator)
            return to_image(resize(coarse, retouched.shape[-1]))
        if stage == "hfdg":
            return to_image(self.lift(self.coarse_input(batch, raw, noise=0.0), retouched))
        return to_image(self.net(retouched))

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=len(batch["raw"]))
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.loss(batch), batch_size=len(batch["raw"]))
        if self.hparams.stage != "fmar":  # sampling every validation is too slow on the CPU
            mse = F.mse_loss(self.output(batch), batch["raw"])
            self.log("val/psnr", -10 * torch.log10(mse.clamp_min(1e-10)), batch_size=len(batch["raw"]))

    @torch.no_grad()
    def preview(self, batch: Mapping[str, Any], count: int = 4) -> dict[str, dict[str, Tensor]]:
        """Rows for :class:`~sgpn.callbacks.ImageGridLogger`: retouched, output, raw."""
        few = {key: batch[key][:count] for key in ("retouched", "raw")}
        return {"rows": {"retouched": few["retouched"], "output": self.output(few, torch.Generator().manual_seed(0)),
                         "raw": few["raw"]}, "masks": {}}

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=self.hparams.lr)
        steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(steps):
            raise ValueError("the cosine decay needs a run of known length: set trainer.max_epochs or max_steps")
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, int(steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


@torch.no_grad()
def fmar_samples(fmar: FRRModule, pairs, seed: int = 0, batch_size: int = 64, progress: bool = True) -> Tensor:
    """FMAR's sample of every pair's retouched face, ``(N, 3, s, s)`` in [0, 1] at FMAR's size,
    in the order of ``pairs`` (a dataset of pairs). One seeded DDIM draw per face, as
    :meth:`FRRffusion.reverse` makes at inference: what HFDG then trains on (the raw face brought
    down and back is sharper and better aligned than any sample, so a detail stage trained on
    it trusts its coarse input too much)."""
    from tqdm.auto import tqdm

    if fmar.hparams.stage != "fmar":
        raise ValueError(f"fmar_samples needs an 'fmar' stage, got {fmar.hparams.stage!r}")
    fmar.eval()
    generator, size = torch.Generator().manual_seed(seed), fmar.hparams.size
    samples = []
    for start in tqdm(range(0, len(pairs), batch_size), desc=f"FMAR samples of {len(pairs)} faces",
                      disable=not progress):
        retouched = torch.stack([pairs[i]["retouched"] for i in range(start, min(start + batch_size, len(pairs)))])
        if retouched.shape[-1] != size:
            raise ValueError(f"FMAR was trained on {size} px pairs, got {retouched.shape[-1]} px")
        coarse, _ = fmar.net.sample(resize(to_network(retouched), fmar.net.condition_size), fmar.hparams.sample_steps,
                                    generator)
        samples.append(to_image(coarse))
    return torch.cat(samples)


class FRRffusion(nn.Module):
    """The two stages together: FMAR samples the low-resolution raw face, HFDG lifts it."""

    def __init__(self, fmar: FRRModule, hfdg: FRRModule, steps: int = 20):
        super().__init__()
        if fmar.hparams.stage != "fmar" or hfdg.hparams.stage != "hfdg":
            raise ValueError(f"FRRffusion needs an 'fmar' and an 'hfdg' stage, got "
                             f"{fmar.hparams.stage!r} and {hfdg.hparams.stage!r}")
        if fmar.hparams.low_size != hfdg.hparams.low_size or fmar.hparams.size != hfdg.hparams.size:
            raise ValueError("FMAR and HFDG were trained for different sizes")
        self.fmar, self.hfdg, self.steps = fmar.net, hfdg, steps
        self.size, self.low_size = fmar.hparams.size, fmar.hparams.low_size

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
