"""The networks of face retouching reversal, FRRffusion's way, at the kit's scale: a diffusion coarse stage and a
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
* **HFDG** (:class:`sgpn.nets.hfdg.HFDG`): lifts FMAR's face to full size, guided by the
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

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from torch import Tensor, nn


def resize(image: Tensor, size: int) -> Tensor:
    """Antialiased bilinear down, bicubic up (the usual SR pair)."""
    if image.shape[-1] == size:
        return image
    if image.shape[-1] > size:
        return F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(image, size=(size, size), mode="bicubic", align_corners=False)



def unet(size: int, in_channels: int, channels: tuple[int, ...], layers: int, attention_at: int | None):
    """A ``diffusers`` ``UNet2DModel``: one down/up block per entry of ``channels``, with
    self-attention in the block whose resolution is ``attention_at`` (``None``: none)."""
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


