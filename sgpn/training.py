"""Training the shape prior and SGPN with Lightning.

Two LightningModules, both driven by ``sgpn fit --config configs/....yaml``:

* :class:`TeacherModule` plays D3DFR's role: a coefficient regressor trained on HQ faces, with
  the ground-truth coefficients where the data has them (the synthetic faces do), compared
  through the face they draw (:class:`FaceSpaceLoss`), and D3DFR's self-supervised losses
  through the renderer (photometric on skin, 68 landmarks, coefficient regulariser) for faces
  without them. With ``train_on="lq"`` and a ``teacher_ckpt`` it instead fine-tunes a
  regressor on low-quality faces against a frozen teacher that sees the HQ face (the paper's
  point about D3DFR failing on LQ input, and the separately fine-tuned D3DFR of variant C).
* :class:`SGPNModule` trains the restoration network, its discriminator and the shape
  restoration module (a :class:`~sgpn.shape_prior.ShapePrior` initialised from the teacher)
  jointly, with the paper's losses::

      L = L_rec + λ_adv L_adv + λ_lm L_3dlm + λ_vt L_mesh      (λ_adv 1, λ_lm 100, λ_vt 100)

  - L_rec: L1, plus a VGG-16 perceptual term when ImageNet weights are on disk (nothing is
    downloaded), otherwise feature matching on the discriminator's features;
  - L_adv: non-saturating logistic loss, with an R1 penalty on real images for the
    discriminator (lazily, every ``r1_every`` steps, as in StyleGAN2);
  - L_3dlm: the frozen teacher's 68 3D landmarks on the output I versus on I_hq;
  - L_mesh: shape and colour of the module's mesh versus the teacher's on I_hq, averaged over
    all vertices.

The shape module starts from ``shape_prior_ckpt`` (default: the teacher); the kit's configs
start it from the regressor fine-tuned on LQ faces, as the release's starts from its LQ
fine-tune of D3DFR. Ablations: ``fusion="lq_only"`` (variant A) and ``fusion="sum"`` (variant
B) change the generator; ``mesh_losses=False`` with ``train_shape_prior=False`` (the
fine-tuned regressor, frozen) is variant C.

The losses live in :mod:`sgpn.losses`, checkpoint reading, export and loading in
:mod:`sgpn.checkpoints`. Images enter as ``(B, 3, S, S)`` in [0, 1] (the data modules'
convention) and are mapped to the network's [-1, 1] here.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, NamedTuple

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from sgpn import camera, coefficients
from sgpn.checkpoints import load_regressor_weights
from sgpn.discriminator import Discriminator
from sgpn.face_model import FaceModel, load_face_model
from sgpn.generator import FeatureInjection, SGPNGenerator, get_config
from sgpn.losses import (D3DFR_WEIGHTS, FaceSpaceLoss, MeshLoss, VGGPerceptual, coefficient_regulariser,
                         feature_matching_loss, landmark_loss_2d, landmark_loss_3d, landmarks_3d,
                         photometric_loss, resolve_perceptual, vgg16_weights_file)
from sgpn.metrics import pixel_metrics, teacher_nme, vertex_error
from sgpn.regressor import CoefficientRegressor
from sgpn.shape_prior import ShapePrior

# The frozen teacher and face model are in eval mode on purpose; Lightning warns about any.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
# Lightning's pytree helper calls an API that this torch release deprecates (not the kit's code).
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")



# ----------------------------------------------------------------------------------------------
# Conversions and checks
# ----------------------------------------------------------------------------------------------


def to_network(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] images to the network's [-1, 1]."""
    return image * 2 - 1


def to_image(network_output: torch.Tensor) -> torch.Tensor:
    """Network output to [0, 1] images (the network's output is not bounded: clamp)."""
    return ((network_output + 1) / 2).clamp(0, 1)


def check_images(batch: Mapping[str, Any], key: str, size: int | None = None) -> torch.Tensor:
    """``batch[key]`` as a finite ``(B, 3, S, S)`` float tensor in [0, 1], or a clear error."""
    if key not in batch:
        raise KeyError(f"the batch has no {key!r} images (it has {sorted(batch)}); "
                       f"use sgpn.data.FaceDataModule, which adds the degraded 'lq'")
    images = batch[key]
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError(f"batch[{key!r}] must be a float tensor, got {getattr(images, 'dtype', type(images))}")
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"batch[{key!r}] must have shape (B, 3, S, S), got {tuple(images.shape)}")
    if size is not None and images.shape[-1] != size:
        raise ValueError(f"batch[{key!r}] is {images.shape[-1]} px but the model works at {size} px; "
                         f"set the data module's size to {size}")
    if not torch.isfinite(images).all():
        raise ValueError(f"batch[{key!r}] contains NaN or Inf")
    low, high = images.min().item(), images.max().item()
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(f"batch[{key!r}] must hold values in [0, 1], got [{low:.3f}, {high:.3f}]")
    return images


def exclude_from_checkpoints(module: nn.Module) -> nn.Module:
    """Re-register every buffer of ``module`` as non-persistent.

    The face model's bases (tens of MB) are rebuilt from code or the BFM file, so they do not
    belong in training checkpoints; the module's ``face_model`` hyper-parameter names them.
    """
    for submodule in module.modules():
        for name, buffer in list(submodule.named_buffers(recurse=False)):
            submodule.register_buffer(name, buffer, persistent=False)
    return module


# ----------------------------------------------------------------------------------------------
# Shared pieces of the two modules
# ----------------------------------------------------------------------------------------------


def build_prior(face_model: FaceModel, regressor: Mapping | None, alignment: str) -> ShapePrior:
    """A shape prior whose regressor is built from ``regressor`` (backbone, input_size)."""
    return ShapePrior(regressor=CoefficientRegressor(**dict(regressor or {})),
                      face_model=face_model, alignment=alignment)


def frozen(module: nn.Module) -> nn.Module:
    return module.eval().requires_grad_(False)


class ImageMetrics(nn.Module):
    """PSNR and SSIM (:func:`~sgpn.metrics.pixel_metrics`) of the output and of the LQ input."""

    def __init__(self):
        super().__init__()
        self.psnr, self.ssim = pixel_metrics()
        self.psnr_lq, self.ssim_lq = pixel_metrics()

    def update(self, output: torch.Tensor, lq: torch.Tensor, hq: torch.Tensor) -> dict:
        self.psnr.update(output, hq)
        self.ssim.update(output, hq)
        self.psnr_lq.update(lq, hq)
        self.ssim_lq.update(lq, hq)
        return {"psnr": self.psnr, "ssim": self.ssim, "psnr_lq": self.psnr_lq, "ssim_lq": self.ssim_lq}


# ----------------------------------------------------------------------------------------------
# Teacher (D3DFR's role)
# ----------------------------------------------------------------------------------------------


class TeacherModule(L.LightningModule):
    """A coefficient regressor trained on faces: D3DFR's role in SGPN.

    Losses (each switched off by a zero weight or by missing data):

    - ``coeff_weight``: :class:`FaceSpaceLoss` to the ground-truth coefficients (synthetic
      data): shape, albedo, lighting and projected landmarks, each normalised;
    - ``teacher_weight``: the same loss to a frozen ``teacher_ckpt``'s prediction on the HQ
      face (fine-tuning on LQ faces, the paper's recipe: no ground truth needed);
    - ``landmark_weight``: D3DFR's 68-landmark loss against the data's landmarks;
    - ``photo_weight``: D3DFR's photometric loss on the rendered skin region (minus occluders
      where the data marks them);
    - ``reg_weight`` / ``gamma_weight``: D3DFR's coefficient and lighting regularisers.

    D3DFR's weights (landmarks 1.6e-3 next to photometric 1.92) are for faces without labels;
    they are relative to the photometric term and mean little without it.
    ``init_ckpt`` starts the regressor from a kit checkpoint or a D3DFR file.
    ``lr_decay="cosine"`` anneals the learning rate to 0 over the run.
    """

    def __init__(self, regressor: dict | None = None, alignment: str = "resize",
                 face_model: str | None = None, train_on: str = "hq", lr: float = 1e-3,
                 weight_decay: float = 0.0, coeff_weight: float = 1.0, teacher_weight: float = 1.0,
                 landmark_weight: float = D3DFR_WEIGHTS["landmark"],
                 photo_weight: float = D3DFR_WEIGHTS["photo"], reg_weight: float = D3DFR_WEIGHTS["reg"],
                 gamma_weight: float = D3DFR_WEIGHTS["gamma"], init_ckpt: str | None = None,
                 teacher_ckpt: str | None = None, lr_decay: str | None = None):
        super().__init__()
        if train_on not in ("hq", "lq"):
            raise ValueError(f"train_on must be 'hq' or 'lq', got {train_on!r}")
        if lr_decay not in (None, "cosine"):
            raise ValueError(f"lr_decay must be None or 'cosine', got {lr_decay!r}")
        if train_on == "lq" and (teacher_ckpt is None or teacher_weight == 0) and coeff_weight == 0:
            raise ValueError("fine-tuning on LQ needs a teacher_ckpt (with teacher_weight > 0) or "
                             "ground-truth coefficients (coeff_weight > 0)")
        self.save_hyperparameters()
        self.face_model = exclude_from_checkpoints(load_face_model(face_model))
        self.prior = build_prior(self.face_model, regressor, alignment)
        self.teacher = frozen(build_prior(self.face_model, regressor, alignment)) if teacher_ckpt else None
        self.face_space_loss = FaceSpaceLoss(self.face_model, self.frame_size)
        self.register_buffer("skin", self.face_model.skin_mask.float()[None, :, None].expand(1, -1, 3).clone(),
                             persistent=False)

    @property
    def frame_size(self) -> int:
        return self.prior.frame_size

    def setup(self, stage: str) -> None:
        if stage != "fit" or getattr(self.trainer, "ckpt_path", None):
            return  # resuming: the checkpoint holds the weights
        if self.hparams.init_ckpt:
            load_regressor_weights(self.prior.regressor, self.hparams.init_ckpt)
        if self.teacher is not None:
            load_regressor_weights(self.teacher.regressor, self.hparams.teacher_ckpt)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def predict_coefficients(self, image: torch.Tensor, prior: ShapePrior | None = None) -> torch.Tensor:
        """Coefficients for ``[0, 1]`` images in the crop frame."""
        prior = prior or self.prior
        return prior.regressor(prior.to_regressor_frame(to_network(image)))

    def losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        hq = check_images(batch, "hq")
        image = hq if self.hparams.train_on == "hq" else check_images(batch, "lq", hq.shape[-1])
        hp, prior, size = self.hparams, self.prior, hq.shape[-1]
        framed = prior.to_regressor_frame(to_network(image))
        coeffs = prior.regressor(framed)
        terms: dict[str, torch.Tensor] = {}
        if hp.coeff_weight and "coeffs" in batch:
            for name, value in self.face_space_loss(coeffs, batch["coeffs"]).items():
                terms[name] = hp.coeff_weight * value
        if hp.landmark_weight and "landmarks" in batch:
            predicted = camera.project(landmarks_3d(self.face_model, coeffs), self.frame_size)
            target = prior.points_to_frame(batch["landmarks"], size)
            terms["landmark"] = hp.landmark_weight * landmark_loss_2d(predicted, target, self.frame_size)
        if hp.photo_weight:
            terms["photo"] = hp.photo_weight * self._photometric(framed, coeffs, batch)
        if hp.reg_weight or hp.gamma_weight:
            reg, gamma = coefficient_regulariser(coeffs)
            terms["reg"] = hp.reg_weight * reg + hp.gamma_weight * gamma
        if self.teacher is not None and hp.teacher_weight:
            with torch.no_grad():
                target = self.predict_coefficients(hq, self.teacher)
            for name, value in self.face_space_loss(coeffs, target).items():
                terms[f"teacher_{name}"] = hp.teacher_weight * value
        if not terms:
            raise ValueError("no teacher loss is active: every weight is zero or the batch lacks "
                             "the data it needs (coeffs, landmarks)")
        terms["total"] = sum(terms.values())
        return terms

    def _photometric(self, framed: torch.Tensor, coeffs: torch.Tensor, batch) -> torch.Tensor:
        """Render in the regressor's frame; compare on rendered skin, minus marked occluders."""
        face = self.face_model(coeffs, self.frame_size)
        renderer = self.prior.renderer
        rendered = renderer(face, self.face_model.faces)
        skin = renderer(face._replace(colors=self.skin.expand(len(coeffs), -1, -1)),
                        self.face_model.faces).image[:, :1]
        mask = rendered.mask * skin
        if "occluder_mask" in batch:
            mask = mask * (1 - self.prior.warp_to_frame(batch["occluder_mask"].float()))
        return photometric_loss(rendered.image, framed, mask.detach())

    def training_step(self, batch, batch_idx):
        terms = self.losses(batch)
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()},
                      prog_bar=False, batch_size=len(batch["hq"]))
        self.log("loss", terms["total"].detach(), prog_bar=True, logger=False)
        return terms["total"]

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def _evaluate(self, batch, split: str):
        terms = self.losses(batch)
        batch_size = len(batch["hq"])
        self.log(f"{split}/loss", terms["total"], batch_size=batch_size, sync_dist=True)
        if "coeffs" in batch:
            errors = self.geometry_errors(batch)
            for name, values in errors.items():
                self.log(f"{split}/{name}", values.mean(), batch_size=batch_size, sync_dist=True,
                         prog_bar=name == "nme")

    @torch.no_grad()
    def geometry_errors(self, batch: Mapping[str, Any], image: torch.Tensor | None = None) -> dict:
        """Per image, against the batch's ground truth: the unposed vertex error and the NME of
        the 68 projected landmarks, for ``image`` (default: the images it trains on)."""
        if image is None:
            image = batch["hq" if self.hparams.train_on == "hq" else "lq"]
        errors = {"vertex_error": vertex_error(self.face_model, self.predict_coefficients(image),
                                               batch["coeffs"])}
        if "landmarks" in batch:
            errors["nme"] = teacher_nme(self.prior, image, batch["landmarks"])
        return errors

    @torch.no_grad()
    def preview(self, batch: Mapping[str, Any], count: int = 4) -> dict[str, dict[str, torch.Tensor]]:
        """Rows of ``[0, 1]`` images for the image-logging callback: input and render."""
        key = "hq" if self.hparams.train_on == "hq" else "lq"
        image = batch[key][:count]
        out = self.prior(to_network(image))
        overlay = torch.where(out.mask > 0.5, to_image(out.image), image)
        return {"rows": {"input": image, "render": to_image(out.image), "overlay": overlay}, "masks": {}}

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.prior.regressor.parameters(), lr=self.hparams.lr,
                                     weight_decay=self.hparams.weight_decay)
        if self.hparams.lr_decay is None:
            return optimizer
        steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(steps):
            raise ValueError("lr_decay='cosine' needs a run of known length: set trainer.max_epochs "
                             "or trainer.max_steps")
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, int(steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


# ----------------------------------------------------------------------------------------------
# SGPN
# ----------------------------------------------------------------------------------------------


class Restored(NamedTuple):
    """What :meth:`SGPNModule.restore` returns; images in [0, 1]."""

    output: torch.Tensor  # (B, 3, S, S) restored face
    d3d: torch.Tensor  # (B, 3, S, S) the rendered shape prior I_3d
    coeffs: torch.Tensor  # (B, 257) z_3d
    masks: dict  # {(resolution, block): (B, C, r, r)} AFFB masks (empty without AFFB)


class SGPNModule(L.LightningModule):
    """SGPN trained end to end: generator, discriminator and shape restoration module.

    ``generator`` names a :data:`sgpn.generator.CONFIGS` entry or gives a config's fields;
    ``fusion`` selects the full model or variants A/B. ``regressor`` gives the shape prior's
    backbone and input size, which must match the teacher checkpoint's.
    ``lambda_l1`` and ``lambda_perceptual`` weigh the two parts of L_rec (the paper gives
    only λ_adv, λ_lm and λ_vt, relative to L_rec). ``feature_scale_init``: the starting value
    of the scalar s that lets F_lq / F_3d into the decoder. The release's 0 starts as a plain
    StyleGAN2 decoder that ignores the input until s grows; 1 lets the features in from the
    first step, which a run of minutes needs.
    ``lr_decay="cosine"`` anneals both learning rates to 0 over the run (its epochs, or
    ``max_steps``); the paper keeps them constant (``None``).
    ``mask_lr_scale`` multiplies the learning rate of AFFB's mask convolutions (1: the paper's
    single rate). On the tiny config for 500 iterations, 10 moved the channel-mean masks further
    apart on face and background (0.60 and 0.65 at 64 px, against 0.53 and 0.58) but not on
    occluders and skin (ratio 1.00 with either).
    """

    def __init__(self, generator: str | dict = "tiny", fusion: str = "affb",
                 regressor: dict | None = None, alignment: str = "resize",
                 face_model: str | None = None, teacher_ckpt: str | None = None,
                 shape_prior_ckpt: str | None = None, train_shape_prior: bool = True,
                 mesh_losses: bool = True, lr: float = 2e-3, d_lr: float | None = None,
                 shape_prior_lr: float = 1e-4, betas: tuple[float, float] = (0.0, 0.99),
                 lambda_adv: float = 1.0, lambda_lm: float = 100.0, lambda_mesh: float = 100.0,
                 perceptual: str = "auto", lambda_l1: float = 1.0, lambda_perceptual: float = 1.0,
                 r1_gamma: float = 10.0, r1_every: int = 16, feature_scale_init: float = 0.0,
                 lr_decay: str | None = None, mask_lr_scale: float = 1.0):
        super().__init__()
        if mask_lr_scale <= 0:
            raise ValueError(f"mask_lr_scale must be positive, got {mask_lr_scale}")
        if lr_decay not in (None, "cosine"):
            raise ValueError(f"lr_decay must be None or 'cosine', got {lr_decay!r}")
        if mesh_losses and teacher_ckpt is None:
            raise ValueError("SGPN's mesh losses (L_3dlm, L_mesh) need a frozen teacher: set "
                             "teacher_ckpt to a teacher or D3DFR checkpoint (make checkpoints writes "
                             "kit_checkpoints/teacher_tiny.ckpt), or set mesh_losses=False (variant C)")
        if r1_every < 1:
            raise ValueError(f"r1_every must be >= 1, got {r1_every}")
        resolve_perceptual(perceptual)  # fail early on a bad choice
        self.save_hyperparameters()
        self.automatic_optimization = False
        config = get_config(generator, fusion=fusion)
        self.generator = SGPNGenerator(config)
        with torch.no_grad():  # the learned scalar s of every feature injection
            for module in self.generator.modules():
                if isinstance(module, FeatureInjection):
                    module.weight.fill_(feature_scale_init)
        self.discriminator = Discriminator.for_generator(config)
        self.face_model = exclude_from_checkpoints(load_face_model(face_model))
        self.shape_prior = build_prior(self.face_model, regressor, alignment)
        self.teacher = frozen(build_prior(self.face_model, regressor, alignment))
        self.mesh_loss = MeshLoss(self.face_model)
        self.val_metrics = ImageMetrics()
        self.test_metrics = ImageMetrics()
        self.register_buffer("iterations", torch.zeros((), dtype=torch.long))
        self.perceptual_term: str | None = None
        self.perceptual: nn.Module | None = None
        if not train_shape_prior:
            frozen(self.shape_prior)

    @property
    def size(self) -> int:
        return self.generator.size

    # -- set-up --------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        self.perceptual_term = resolve_perceptual(self.hparams.perceptual)
        if self.perceptual_term == "vgg16" and self.perceptual is None:
            self.perceptual = VGGPerceptual(vgg16_weights_file())
        rank_zero_info(f"SGPN reconstruction loss: L1 + {self.perceptual_term} "
                       f"(perceptual='{self.hparams.perceptual}')")
        if getattr(self.trainer, "ckpt_path", None):
            return  # resuming: the checkpoint holds every network, teacher included
        hp = self.hparams
        if hp.teacher_ckpt:
            load_regressor_weights(self.teacher.regressor, hp.teacher_ckpt)
        init = hp.shape_prior_ckpt or hp.teacher_ckpt
        if init:
            load_regressor_weights(self.shape_prior.regressor, init)

    def on_fit_start(self) -> None:
        if self.logger is not None:
            self.logger.log_hyperparams({"reconstruction_term": f"l1+{self.perceptual_term}"})

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        if not self.hparams.train_shape_prior:
            self.shape_prior.eval()
        return self

    def configure_optimizers(self):
        hp = self.hparams
        # the mask convolutions get their own group only when their rate differs (so runs
        # with one rate keep the optimiser layout their checkpoints were saved with)
        masks = [p for name, p in self.generator.named_parameters()
                 if ".convs_mask." in name and hp.mask_lr_scale != 1]
        chosen = set(map(id, masks))
        groups = [{"params": [p for p in self.generator.parameters() if id(p) not in chosen], "lr": hp.lr}]
        if masks:
            groups.append({"params": masks, "lr": hp.lr * hp.mask_lr_scale})
        if hp.train_shape_prior:
            groups.append({"params": list(self.shape_prior.regressor.parameters()), "lr": hp.shape_prior_lr})
        betas = tuple(hp.betas)
        opt_g = torch.optim.Adam(groups, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp.d_lr or hp.lr, betas=betas)
        if hp.lr_decay is None:
            return [opt_g, opt_d]
        iterations = self.planned_iterations()
        schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(o, iterations) for o in (opt_g, opt_d)]
        return [opt_g, opt_d], schedulers

    def planned_iterations(self) -> int:
        """Iterations the trainer will run: its epochs' batches, or ``max_steps`` / 2 when that
        comes first (Lightning counts each optimiser's step, two per iteration here)."""
        trainer = self.trainer
        iterations = trainer.estimated_stepping_batches  # also sets up the training loader
        if trainer.max_steps > 0:
            by_epochs = (trainer.num_training_batches * trainer.max_epochs
                         if trainer.max_epochs is not None and trainer.max_epochs > 0 else math.inf)
            iterations = min(math.ceil(trainer.max_steps / 2), by_epochs)
        if not math.isfinite(iterations):
            raise ValueError("lr_decay='cosine' needs a run of known length: set trainer.max_epochs "
                             "(with a finite data loader) or trainer.max_steps")
        return int(iterations)

    # -- the network ---------------------------------------------------------------------------

    def forward(self, lq: torch.Tensor):
        """``[-1, 1]`` LQ crops -> (output in [-1, 1], shape prior output, AFFB masks)."""
        prior = self.shape_prior(lq)
        output, masks = self.generator(lq, prior.image, prior.coeffs, return_masks=True)
        return output, prior, masks

    @torch.no_grad()
    def restore(self, lq: torch.Tensor) -> Restored:
        """Restore ``[0, 1]`` LQ crops (no gradients, current train/eval mode)."""
        output, prior, masks = self(to_network(lq))
        return Restored(to_image(output), to_image(prior.image), prior.coeffs, masks)

    def teacher_coefficients(self, image: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's coefficients for ``[-1, 1]`` images (gradients reach the image)."""
        return self.teacher.regressor(self.teacher.to_regressor_frame(image.clamp(-1, 1)))

    # -- losses --------------------------------------------------------------------------------

    def discriminator_loss(self, hq: torch.Tensor, fake: torch.Tensor, r1: bool) -> dict:
        """Non-saturating logistic loss; every ``r1_every`` steps the R1 penalty on real images,
        scaled by ``r1_every`` (StyleGAN2's lazy regularisation)."""
        hp = self.hparams
        real = hq.detach().requires_grad_(r1)
        real_logit = self.discriminator(real)
        fake_logit = self.discriminator(fake.detach())
        terms = {"d_loss": F.softplus(fake_logit).mean() + F.softplus(-real_logit).mean()}
        if r1:
            (grad,) = torch.autograd.grad(real_logit.sum(), real, create_graph=True)
            terms["r1"] = hp.r1_gamma / 2 * grad.pow(2).flatten(1).sum(1).mean() * hp.r1_every
        terms["d_total"] = sum(terms.values())
        terms["real_score"] = real_logit.detach().mean()
        terms["fake_score"] = fake_logit.detach().mean()
        return terms

    def generator_losses(self, hq: torch.Tensor, output: torch.Tensor, prior) -> dict:
        """L_rec + λ_adv L_adv + λ_lm L_3dlm + λ_vt L_mesh, with every term for logging."""
        hp = self.hparams
        terms: dict[str, torch.Tensor] = {"l1": hp.lambda_l1 * F.l1_loss(output, hq)}
        fake_logit, fake_features = self.discriminator(output, return_features=True)
        if self.perceptual_term == "feature_matching":
            with torch.no_grad():
                _, real_features = self.discriminator(hq, return_features=True)
            terms["feature_matching"] = hp.lambda_perceptual * feature_matching_loss(fake_features, real_features)
        elif self.perceptual_term == "vgg16":
            terms["perceptual"] = hp.lambda_perceptual * self.perceptual(output, hq)
        terms["adv"] = hp.lambda_adv * F.softplus(-fake_logit).mean()
        if hp.mesh_losses:
            with torch.no_grad():
                target = self.teacher_coefficients(hq)
                target_face = self.face_model(target, self.shape_prior.frame_size)
            predicted = landmarks_3d(self.face_model, self.teacher_coefficients(output))
            terms["3dlm"] = hp.lambda_lm * landmark_loss_3d(predicted, target_face.landmarks_3d)
            terms["mesh"] = hp.lambda_mesh * self.mesh_loss(prior.coeffs, prior.face.colors, target,
                                                            target_face.colors)
        terms["g_total"] = sum(terms.values())
        return terms

    # -- steps ---------------------------------------------------------------------------------

    def _pair(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        hq = check_images(batch, "hq", self.size)
        lq = check_images(batch, "lq", self.size)
        return to_network(hq), to_network(lq)

    def training_step(self, batch, batch_idx):
        opt_g, opt_d = self.optimizers()
        hq, lq = self._pair(batch)
        output, prior, _ = self(lq)

        r1 = int(self.iterations) % self.hparams.r1_every == 0
        with self.toggled_optimizer(opt_d):
            d_terms = self.discriminator_loss(hq, output, r1)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_terms["d_total"])
            opt_d.step()

        with self.toggled_optimizer(opt_g):
            g_terms = self.generator_losses(hq, output, prior)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_terms["g_total"])
            opt_g.step()
        self.iterations += 1
        for scheduler in self.lr_schedulers() or []:
            scheduler.step()

        logs = {f"train/{k}": v.detach() for k, v in {**d_terms, **g_terms}.items()}
        self.log_dict(logs, batch_size=len(hq))
        self.log_dict({"l1": g_terms["l1"].detach(), "adv": g_terms["adv"].detach(),
                       "d": d_terms["d_loss"].detach()}, prog_bar=True, logger=False, batch_size=len(hq))

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_metrics, "test")

    def _evaluate(self, batch, metrics: ImageMetrics, split: str):
        hq = check_images(batch, "hq", self.size)
        lq = check_images(batch, "lq", self.size)
        restored = self.restore(lq)
        values = metrics.update(restored.output, lq, hq)
        for name, metric in values.items():
            self.log(f"{split}/{name}", metric, batch_size=len(hq), prog_bar=name in ("psnr", "ssim"))

    @torch.no_grad()
    def preview(self, batch: Mapping[str, Any], count: int = 4) -> dict[str, dict[str, torch.Tensor]]:
        """Rows of ``[0, 1]`` images for the image-logging callback (LQ, I_3d, output, GT) and
        the channel-mean AFFB masks of the second block at each resolution."""
        lq, hq = batch["lq"][:count], batch["hq"][:count]
        restored = self.restore(lq)
        masks = {f"M {res}px": mask.mean(1, keepdim=True)
                 for (res, block), mask in sorted(restored.masks.items()) if block == 1 and res >= 16}
        return {"rows": {"LQ": lq, "I_3d": restored.d3d, "output": restored.output, "GT": hq},
                "masks": masks}
