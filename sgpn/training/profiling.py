"""Where a training iteration of SGPN spends its time, and what each iteration's losses were.

Lightning's profilers time its hooks, not the parts of one ``training_step``; this times those
parts with forward hooks on the networks (the generator, the discriminator, the shape prior,
the frozen teacher's regressor, the face model) and a wrapper around the two backward passes,
inside a real ``Trainer.fit`` run of a config's model and data.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import lightning as L
import torch
import yaml

from sgpn.data.datamodule import FaceDataModule
from sgpn.paths import CONFIGS
from sgpn.training.sgpn_module import SGPNModule

#: The losses compared between two runs (their first iterations must agree).
LOGGED_LOSSES = ("train/g_total", "train/d_total")


class IterationTimer(L.Callback):
    """Wall time and losses of every training iteration, and the time of each timed part."""

    def __init__(self, module: SGPNModule):
        self.seconds: list[float] = []
        self.losses: list[dict[str, float]] = []
        self.parts: dict[str, float] = defaultdict(float)
        #: the trained networks' sizes
        self.parameters = {name: sum(p.numel() for p in network.parameters()) for name, network in
                           (("generator", module.generator), ("discriminator", module.discriminator),
                            ("shape_prior", module.shape_prior))}
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


def profile_iterations(config: str | Path, iterations: int, train_length: int = 64, precision: str = "32-true",
                       data_options: dict | None = None, **model_options) -> IterationTimer:
    """Train ``config``'s SGPN model for ``iterations`` iterations on ``train_length`` of its
    faces (seeded as the config says, no validation, logging or checkpoints) on the CPU and time
    them. ``data_options`` and ``model_options`` override the config's arguments."""
    settings = yaml.safe_load(Path(config).read_text())
    L.seed_everything(settings.get("seed_everything", 0), verbose=False)
    module = SGPNModule(**{**settings["model"]["init_args"], **model_options})
    data = FaceDataModule(**{**settings["data"]["init_args"], "train_length": train_length, "cache_dir": None,
                             **(data_options or {})})
    timer = IterationTimer(module)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=2 * iterations, logger=False, callbacks=[timer],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, precision=precision)
    trainer.fit(module, data)
    return timer


def paper_step(precision: str, iterations: int, teacher: str) -> dict:
    """One row of ``sgpn bench paper-step``: ``configs/paper.yaml`` at batch 1 on its synthetic
    512 px faces, with ``teacher`` (a D3DFR file). Run it in a fresh process: the peak memory
    reported is the process's (``ru_maxrss``)."""
    timer = profile_iterations(CONFIGS / "paper.yaml", iterations, train_length=iterations + 1, precision=precision,
                               data_options={"batch_size": 1, "num_workers": 0}, teacher_ckpt=teacher)
    return {"s_per_iteration": round(statistics.median(timer.seconds[1:]), 2),
            "peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "parameters": timer.parameters}


if __name__ == "__main__":  # python -m sgpn.training.profiling PRECISION ITERATIONS TEACHER (bench paper-step)
    print(json.dumps(paper_step(sys.argv[1], int(sys.argv[2]), sys.argv[3])))
