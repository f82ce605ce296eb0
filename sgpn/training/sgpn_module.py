"""SGPN trained end to end with Lightning (``sgpn fit --config configs/tiny.yaml``).

:class:`SGPNModule` trains the restoration network, its discriminator and the shape
restoration module (a :class:`~sgpn.nets.shape_prior.ShapePrior` initialised from the teacher)
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

The module is an :class:`~sgpn.nets.restorer.SGPNRestorer` (``forward``, ``restore``), so a
model restores the same way during and after training. Images enter as ``(B, 3, S, S)`` in
[0, 1] (the data modules' convention) and are mapped to the network's [-1, 1] here.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from sgpn.checkpoints import load_regressor_weights
from sgpn.evaluation.metrics import pixel_metrics
from sgpn.face3d.face_model import load_face_model
from sgpn.images import batch_images, to_network
from sgpn.nets.discriminator import Discriminator
from sgpn.nets.generator import FeatureInjection, SGPNGenerator, get_config
from sgpn.nets.restorer import SGPNRestorer, prior_weight
from sgpn.nets.shape_prior import build_shape_prior
from sgpn.training.losses import (MeshLoss, VGGPerceptual, feature_matching_loss, landmark_loss_3d, resolve_perceptual,
                                  vgg16_weights_file)
from sgpn.training.teacher import frozen
from sgpn.weights import exclude_from_checkpoints


class ImageMetrics(nn.Module):
    """PSNR and SSIM (:func:`~sgpn.evaluation.metrics.pixel_metrics`) of the output and of the LQ input."""

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



class TeacherTargets(NamedTuple):
    """What the frozen teacher reads on HQ faces: the targets of L_3dlm and L_mesh."""

    coeffs: torch.Tensor  # (B, 257)
    landmarks_3d: torch.Tensor  # (B, 68, 3)
    colors: torch.Tensor  # (B, N, 3) lit vertex colours


class SGPNModule(SGPNRestorer, L.LightningModule):
    """SGPN trained end to end: generator, discriminator and shape restoration module.

    ``generator`` names a :data:`sgpn.nets.generator.CONFIGS` entry or gives a config's fields;
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
    ``prior`` (with ``prior_mix``): where I_3d's coefficients come from, to test what a better
    shape prior changes (the AFFB prior ladder, synthetic faces only): ``"regressor"`` (SGPN),
    ``"mix"`` (``prior_mix`` of the way from the regressor's to each face's true coefficients)
    or ``"oracle"`` (the true coefficients); the latter two keep the shape module frozen without
    mesh losses, as variant C does.
    ``cache_teacher_targets``: compute the frozen teacher's targets for each training face once
    and keep them for the run (about 0.4 MB a face with the built-in face model), instead of
    on every visit (``False``: the earlier path, for ``sgpn bench step``'s comparison).
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
                 lr_decay: str | None = None, mask_lr_scale: float = 1.0, prior: str = "regressor",
                 prior_mix: float = 0.5, cache_teacher_targets: bool = True):
        prior_weight(prior, prior_mix)  # fail early on a bad choice
        if prior != "regressor" and (train_shape_prior or mesh_losses):
            raise ValueError(f"prior={prior!r} renders I_3d partly from the true coefficients: it keeps the "
                             f"shape module frozen without mesh losses (train_shape_prior=False, "
                             f"mesh_losses=False), as variant C does")
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
        config = get_config(generator, fusion=fusion)
        model_3d = exclude_from_checkpoints(load_face_model(face_model))
        super().__init__(SGPNGenerator(config), build_shape_prior(model_3d, regressor, alignment))
        self.save_hyperparameters()
        self.automatic_optimization = False
        with torch.no_grad():  # the learned scalar s of every feature injection
            for module in self.generator.modules():
                if isinstance(module, FeatureInjection):
                    module.weight.fill_(feature_scale_init)
        self.discriminator = Discriminator.for_generator(config)
        self.face_model = model_3d
        self.teacher = frozen(build_shape_prior(self.face_model, regressor, alignment))
        self.mesh_loss = MeshLoss(self.face_model)
        self.val_metrics = ImageMetrics()
        self.test_metrics = ImageMetrics()
        self.register_buffer("iterations", torch.zeros((), dtype=torch.long))
        self._teacher_targets: dict = {}  # face key -> TeacherTargets of one face (not saved)
        self.perceptual_term: str | None = None
        self.perceptual: nn.Module | None = None
        if not train_shape_prior:
            frozen(self.shape_prior)

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

    @torch.no_grad()
    def teacher_targets(self, hq: torch.Tensor, keys: list | None = None) -> TeacherTargets:
        """The frozen teacher's reading of the ``[-1, 1]`` HQ faces: coefficients, 3D landmarks
        and vertex colours, the targets of L_3dlm and L_mesh. They never change for a face, so
        with ``cache_teacher_targets`` they are computed once per face (``keys``: one hashable
        per face, e.g. its index and flip) and kept in memory for the run."""
        cached = self._teacher_targets
        if keys is not None and all(key in cached for key in keys):
            return TeacherTargets(*(torch.stack(parts) for parts in zip(*(cached[key] for key in keys))))
        coeffs = self.teacher_coefficients(hq)
        face = self.face_model(coeffs, self.shape_prior.frame_size)
        targets = TeacherTargets(coeffs, face.landmarks_3d, face.colors)
        if keys is not None:
            cached.update({key: tuple(part[i].clone() for part in targets) for i, key in enumerate(keys)})
        return targets

    def target_keys(self, batch: Mapping[str, Any]) -> list | None:
        """One key per face of a training batch for :meth:`teacher_targets`: its index and
        whether it was flipped (``None`` without ``cache_teacher_targets`` or indices)."""
        if not self.hparams.cache_teacher_targets or "index" not in batch:
            return None
        flipped = batch.get("flipped", torch.zeros(len(batch["index"]), dtype=torch.bool))
        return [(int(i), bool(f)) for i, f in zip(batch["index"], flipped)]

    def generator_losses(self, hq: torch.Tensor, output: torch.Tensor, prior, keys: list | None = None) -> dict:
        """L_rec + λ_adv L_adv + λ_lm L_3dlm + λ_vt L_mesh, with every term for logging
        (``keys``: see :meth:`teacher_targets`)."""
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
            target = self.teacher_targets(hq, keys)
            predicted = self.face_model.landmarks_3d(self.teacher_coefficients(output))
            terms["3dlm"] = hp.lambda_lm * landmark_loss_3d(predicted, target.landmarks_3d)
            terms["mesh"] = hp.lambda_mesh * self.mesh_loss(prior.coeffs, prior.face.colors, target.coeffs,
                                                            target.colors)
        terms["g_total"] = sum(terms.values())
        return terms

    # -- steps ---------------------------------------------------------------------------------

    def _pair(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        hq = batch_images(batch, "hq", self.size)
        lq = batch_images(batch, "lq", self.size)
        return to_network(hq), to_network(lq)

    def true_coefficients(self, batch) -> torch.Tensor | None:
        """The batch's true coefficients when I_3d needs them (``prior``: mix or oracle), else None."""
        if not self.prior_weight:
            return None
        if "coeffs" not in batch:
            raise ValueError(f"prior={self.hparams.prior!r} renders I_3d from each face's true coefficients, "
                             f"which only synthetic faces have (source: synthetic); a folder of photos has none")
        return batch["coeffs"]

    def training_step(self, batch, batch_idx):
        opt_g, opt_d = self.optimizers()
        hq, lq = self._pair(batch)
        output, prior, _ = self(lq, self.true_coefficients(batch))

        r1 = int(self.iterations) % self.hparams.r1_every == 0
        with self.toggled_optimizer(opt_d):
            d_terms = self.discriminator_loss(hq, output, r1)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_terms["d_total"])
            opt_d.step()

        with self.toggled_optimizer(opt_g):
            g_terms = self.generator_losses(hq, output, prior, self.target_keys(batch))
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
        hq = batch_images(batch, "hq", self.size)
        lq = batch_images(batch, "lq", self.size)
        restored = self.restore(lq, self.true_coefficients(batch))
        values = metrics.update(restored.output, lq, hq)
        for name, metric in values.items():
            self.log(f"{split}/{name}", metric, batch_size=len(hq), prog_bar=name in ("psnr", "ssim"))

    @torch.no_grad()
    def preview(self, batch: Mapping[str, Any], count: int = 4) -> dict[str, dict[str, torch.Tensor]]:
        """Rows of ``[0, 1]`` images for the image-logging callback (LQ, I_3d, output, GT) and
        the channel-mean AFFB masks of the second block at each resolution."""
        lq, hq = batch["lq"][:count], batch["hq"][:count]
        coeffs = self.true_coefficients(batch)
        restored = self.restore(lq, None if coeffs is None else coeffs[:count])
        masks = {f"M {res}px": mask.mean(1, keepdim=True)
                 for (res, block), mask in sorted(restored.masks.items()) if block == 1 and res >= 16}
        return {"rows": {"LQ": lq, "I_3d": restored.i3d, "output": restored.output, "GT": hq},
                "masks": masks}
