"""Image logging during training: labelled grids written as PNG files beside the logs.

Whenever validation runs (the sanity check before training included), :class:`ImageGridLogger`
takes the first validation batch, asks the module for its ``preview(batch)`` (rows of images
such as LQ / I_3d / output / GT, and AFFB masks) and writes ``images/step0000123_grid.png``
and ``..._masks.png`` into the logger's directory. With a TensorBoard logger the grids also go
to TensorBoard.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

LABEL_WIDTH = 64


class TrainingBudget(L.pytorch.callbacks.Timer):
    """Lightning's ``Timer`` with a budget in minutes: training stops when it is spent, and the
    time trained so far goes into every checkpoint (across resumes); ``sgpn export`` keeps it
    as ``training_minutes``. Only a float argument, because the CLI cannot parse ``Timer``'s
    enum-typed defaults."""

    def __init__(self, minutes: float):
        if not minutes > 0:
            raise ValueError(f"the training budget must be a positive number of minutes, got {minutes!r}")
        super().__init__(duration=timedelta(minutes=minutes), interval="step", verbose=True)


def labelled_grid(rows: dict[str, torch.Tensor], size: int | None = None, padding: int = 2) -> Image.Image:
    """One row per name (``(N, C, H, W)`` images in [0, 1], C = 1 or 3), labelled on the left;
    every image is resized (nearest) to ``size`` (default: the first row's)."""
    if not rows:
        raise ValueError("no rows to draw")
    first = next(iter(rows.values()))
    size = size or first.shape[-1]
    strips = []
    for name, images in rows.items():
        images = images.detach().float().cpu()
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"row {name!r} must be (N, 1 or 3, H, W), got {tuple(images.shape)}")
        images = F.interpolate(images, size=(size, size), mode="nearest").expand(-1, 3, -1, -1)
        strip = make_grid(images.clamp(0, 1), nrow=len(images), padding=padding, pad_value=1.0)
        strips.append((name, (strip.permute(1, 2, 0) * 255).round().byte().numpy()))
    width = max(s.shape[1] for _, s in strips) + LABEL_WIDTH
    height = sum(s.shape[0] for _, s in strips)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    top = 0
    for name, strip in strips:
        canvas.paste(Image.fromarray(strip), (LABEL_WIDTH, top))
        draw.text((4, top + strip.shape[0] // 2 - 5), name, fill="black")
        top += strip.shape[0]
    return canvas


class ImageGridLogger(L.Callback):
    """Writes the module's ``preview`` of the first validation batch as labelled PNG grids.

    ``num_images`` columns; ``scale`` enlarges small images (64 px) for viewing.
    """

    def __init__(self, num_images: int = 4, scale: int = 2, dirname: str = "images"):
        super().__init__()
        if num_images < 1 or scale < 1:
            raise ValueError(f"num_images and scale must be >= 1, got {num_images}, {scale}")
        self.num_images = num_images
        self.scale = scale
        self.dirname = dirname
        self.written: list[Path] = []
        self.folder: Path | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        # every rank asks: under DDP ``trainer.log_dir`` is a broadcast from rank 0
        self.folder = Path(trainer.log_dir or trainer.default_root_dir) / self.dirname

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx != 0 or dataloader_idx != 0 or not trainer.is_global_zero:
            return
        if not hasattr(pl_module, "preview"):
            raise TypeError(f"{type(pl_module).__name__} has no preview(batch) for ImageGridLogger")
        preview = pl_module.preview(batch, self.num_images)
        step = trainer.global_step
        stem = f"step{step:07d}"
        folder = self.folder
        folder.mkdir(parents=True, exist_ok=True)
        size = next(iter(preview["rows"].values())).shape[-1] * self.scale
        for kind, rows in (("grid", preview["rows"]), ("masks", preview.get("masks") or {})):
            if not rows:
                continue
            picture = labelled_grid(rows, size)
            path = folder / f"{stem}_{kind}.png"
            picture.save(path)
            self.written.append(path)
            experiment = getattr(trainer.logger, "experiment", None)
            if hasattr(experiment, "add_image"):  # TensorBoard
                experiment.add_image(f"preview/{kind}", np.asarray(picture), step, dataformats="HWC")
