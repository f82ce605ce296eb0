"""Small shareable copies of training checkpoints (``sgpn export``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from sgpn.checkpoints import COMPACT_MARK, TRAINING_MINUTES
from sgpn.nets.frr_stage import STAGES

#: What a compact export leaves out of an SGPN checkpoint: the discriminator (only training
#: needs it) and the frozen teacher (rebuilt from ``teacher_ckpt`` when loading).
COMPACT_DROPS = ("discriminator.", "teacher.")


def export_checkpoint(source: str | os.PathLike, target: str | os.PathLike, compact: bool = False) -> Path:
    """Write a small copy of a Lightning checkpoint for sharing: weights and hyper-parameters
    only (no optimiser, loop or callback state). :func:`sgpn.load` and ``sgpn restore`` load
    it, but it cannot resume training.

    A :class:`~sgpn.training.callbacks.TrainingBudget` callback's time is kept as
    ``training_minutes``. Teacher modules leave out the frozen teacher of an LQ fine-tune (the
    file ``teacher_ckpt`` names holds it).

    ``compact`` (SGPN checkpoints): also leave out the discriminator and the frozen teacher and
    store the weights as float16, about a quarter of the size; loading brings the teacher back
    from the checkpoint named by ``teacher_ckpt``. The kit commits its tiny models this way, and
    its teacher, LQ regressor and retouching-reversal stages (float16 only; loading copies the
    values into the float32 networks).
    """
    keep = ("state_dict", "hyper_parameters", "hparams_name", "epoch", "global_step",
            "pytorch-lightning_version", TRAINING_MINUTES)
    data = torch.load(source, map_location="cpu", weights_only=True)
    missing = [k for k in ("state_dict", "hyper_parameters") if k not in data]
    if missing:
        raise ValueError(f"{source} is not a Lightning checkpoint of the kit: it lacks {missing}")
    small = {k: data[k] for k in keep if k in data}
    if any(k.startswith("prior.") for k in data["state_dict"]):
        # a teacher module: a frozen teacher inside it (LQ fine-tuning) is its own checkpoint
        small["state_dict"] = {k: v for k, v in data["state_dict"].items() if not k.startswith("teacher.")}
    timer = data.get("callbacks", {}).get("TrainingBudget")
    if timer is not None:
        small[TRAINING_MINUTES] = timer["time_elapsed"]["train"] / 60
    if compact:
        state = small["state_dict"]
        if any(k.startswith("generator.") for k in state):
            drops = COMPACT_DROPS
        elif data["hyper_parameters"].get("stage") in STAGES or any(k.startswith("prior.") for k in state):
            drops = ()  # a retouching-reversal stage or a teacher holds nothing but its network
        else:
            raise ValueError(f"{source}: only SGPN, teacher and retouching-reversal checkpoints have a compact form")
        small["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in state.items()
                               if not k.startswith(drops)}
        small[COMPACT_MARK] = {"dropped": list(drops), "dtype": "float16"}
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(small, target)
    return target
