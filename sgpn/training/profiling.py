"""Where a training iteration of SGPN spends its time, and what each iteration's losses were.

Lightning's profilers time its hooks, not the parts of one ``training_step``; this times those
parts with forward hooks on the networks (the generator, the discriminator, the shape prior,
the frozen teacher's regressor, the face model) and a wrapper around the two backward passes,
inside a real ``Trainer.fit`` run of a config's model and data.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import lightning as L
import torch
import yaml

from sgpn.data.datamodule import FaceDataModule
from sgpn.training.sgpn_module import SGPNModule

#: The losses compared between two runs (their first iterations must agree).
LOGGED_LOSSES = ("train/g_total", "train/d_total")


class IterationTimer(L.Callback):
    """Wall time and losses of every training iteration, and the time of each timed part."""

    def __init__(self, module: SGPNModule):
        self.seconds: list[float] = []
        self.losses: list[dict[str, float]] = []
        self.parts: dict[str, float] = defaultdict(float)
        parts = {"generator": module.generator, "discriminator": module.discriminator,
                 "shape prior (regressor, mesh, render)": module.shape_prior,
                 "teacher regressor (HQ targets, L_3dlm)": module.teacher.regressor,
                 "face model (every call)": module.face_model}
        for name, network in parts.items():
            self._time_forward(name, network)
        backward = module.manual_backward

        def timed_backward(loss, *args, **kwargs):
            start = time.perf_counter()
            backward(loss, *args, **kwargs)
            self.parts["backward (D and G)"] += time.perf_counter() - start

        module.manual_backward = timed_backward

    def _time_forward(self, name: str, network: torch.nn.Module) -> None:
        started: list[float] = []
        network.register_forward_pre_hook(lambda *_: started.append(time.perf_counter()))

        def done(*_):
            self.parts[name] += time.perf_counter() - started.pop()

        network.register_forward_hook(done)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.seconds.append(time.perf_counter() - self._start)
        self.losses.append({key: float(trainer.callback_metrics[key]) for key in LOGGED_LOSSES})


def profile_iterations(config: str | Path, iterations: int, train_length: int = 64,
                       **model_options) -> IterationTimer:
    """Train ``config``'s SGPN model for ``iterations`` iterations on ``train_length`` of its
    faces (seeded as the config says, no validation, logging or checkpoints) and time them.
    ``model_options`` override the config's model arguments."""
    settings = yaml.safe_load(Path(config).read_text())
    L.seed_everything(settings.get("seed_everything", 0), verbose=False)
    module = SGPNModule(**{**settings["model"]["init_args"], **model_options})
    data = FaceDataModule(**{**settings["data"]["init_args"], "train_length": train_length, "cache_dir": None})
    timer = IterationTimer(module)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=2 * iterations, logger=False, callbacks=[timer],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0)
    trainer.fit(module, data)
    return timer
