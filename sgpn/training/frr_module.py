"""Training a retouching-reversal stage with Lightning (``sgpn fit --config configs/frr_tiny.yaml``)."""

from __future__ import annotations

import math
from typing import Any, Mapping

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from sgpn.nets.frr_stage import FRRStage


class FRRModule(FRRStage, L.LightningModule):
    """One trainable stage of the kit's FRRffusion (``stage``): ``"fmar"``, ``"hfdg"`` or the
    ``"unet"`` baseline, each with AdamW and a cosine decay, and the same validation (PSNR of
    the stage's output against the raw face). ``low_size``: FMAR's resolution. The module is an
    :class:`~sgpn.nets.frr_stage.FRRStage` (``lift``, ``output``), with training on top."""

    def __init__(self, stage: str = "fmar", size: int = 64, low_size: int = 32, lr: float = 2e-4,
                 network: dict | None = None, sample_steps: int = 20):
        super().__init__(stage, size, low_size, network, sample_steps)
        self.save_hyperparameters()

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=len(batch["raw"]))
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.loss(batch), batch_size=len(batch["raw"]))
        if self.stage != "fmar":  # sampling every validation is too slow on the CPU
            mse = F.mse_loss(self.output(batch), batch["raw"])
            self.log("val/psnr", -10 * torch.log10(mse.clamp_min(1e-10)), batch_size=len(batch["raw"]))

    @torch.no_grad()
    def preview(self, batch: Mapping[str, Any], count: int = 4) -> dict[str, dict[str, Tensor]]:
        """Rows for :class:`~sgpn.training.callbacks.ImageGridLogger`: retouched, output, raw."""
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
