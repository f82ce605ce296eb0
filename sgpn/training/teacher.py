"""The teacher: D3DFR's role in SGPN, trained with Lightning (``sgpn fit --config
configs/teacher_tiny.yaml``).

:class:`TeacherModule` is a coefficient regressor trained on HQ faces, with the ground-truth
coefficients where the data has them (the synthetic faces do), compared through the face they
draw (:class:`~sgpn.training.losses.FaceSpaceLoss`), and D3DFR's self-supervised losses
through the renderer (photometric on skin, 68 landmarks, coefficient regulariser) for faces
without them. With ``train_on="lq"`` and a ``teacher_ckpt`` it instead fine-tunes a regressor
on low-quality faces against a frozen teacher that sees the HQ face (the paper's point about
D3DFR failing on LQ input, and the separately fine-tuned D3DFR of variant C).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import lightning as L
import torch
from torch import nn

from sgpn.checkpoints import load_regressor_weights
from sgpn.evaluation.metrics import teacher_nme, vertex_error
from sgpn.face3d import camera
from sgpn.face3d.face_model import load_face_model
from sgpn.images import batch_images, to_image, to_network
from sgpn.nets.shape_prior import ShapePrior, build_shape_prior
from sgpn.training.losses import (D3DFR_WEIGHTS, FaceSpaceLoss, coefficient_regulariser, landmark_loss_2d,
                                  photometric_loss)
from sgpn.weights import exclude_from_checkpoints


def frozen(module: nn.Module) -> nn.Module:
    """``module`` in eval mode without gradients: a teacher that training never changes."""
    return module.eval().requires_grad_(False)


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
        self.prior = build_shape_prior(self.face_model, regressor, alignment)
        self.teacher = frozen(build_shape_prior(self.face_model, regressor, alignment)) if teacher_ckpt else None
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
        hq = batch_images(batch, "hq")
        image = hq if self.hparams.train_on == "hq" else batch_images(batch, "lq", hq.shape[-1])
        hp, prior, size = self.hparams, self.prior, hq.shape[-1]
        framed = prior.to_regressor_frame(to_network(image))
        coeffs = prior.regressor(framed)
        terms: dict[str, torch.Tensor] = {}
        if hp.coeff_weight and "coeffs" in batch:
            for name, value in self.face_space_loss(coeffs, batch["coeffs"]).items():
                terms[name] = hp.coeff_weight * value
        if hp.landmark_weight and "landmarks" in batch:
            predicted = camera.project(self.face_model.landmarks_3d(coeffs), self.frame_size)
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

