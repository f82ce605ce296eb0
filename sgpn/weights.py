"""Reading released weight files with errors that name the problem.

``load_state_dict(strict=True)`` reports mismatches as one long message; here a wrong file is
told apart from a missing file, a file of another model (no expected key present), a file with
missing or unexpected keys, and a file with wrongly shaped tensors, each naming the keys.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn


def _preview(names: Iterable[str], limit: int = 8) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > limit else shown


def read_state_dict(path: str | os.PathLike, keys: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """Load a checkpoint file (``weights_only=True``) and return its state dict.

    The file may hold the state dict itself or a dict with the state dict under one of
    ``keys`` (e.g. D3DFR's ``"net_recon"``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged or foreign files
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {err}") from err
    if not isinstance(data, Mapping):
        raise ValueError(f"{path} holds a {type(data).__name__}, not a state dict")
    for key in keys:
        if key in data and isinstance(data[key], Mapping):
            data = data[key]
            break
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{path} holds no tensors at the top level or under {list(keys)}; "
                         f"its keys are {_preview(map(str, data))}")
    if len(tensors) != len(data):
        others = [k for k in data if k not in tensors]
        raise ValueError(f"{path}: entries {_preview(map(str, others))} are not tensors; "
                         f"expected a state dict" + (f" (or one under {list(keys)})" if keys else ""))
    return tensors


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor],
                source: str = "state dict") -> None:
    """Copy ``state_dict`` into ``module``; every key must be present with the right shape."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing and len(missing) == len(own):
        raise KeyError(f"{source} does not look like weights for {type(module).__name__}: none of "
                       f"its {len(own)} keys is present (expected {_preview(own)}; found {_preview(state_dict)})")
    problems = []
    if missing:
        problems.append(f"missing key(s): {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected key(s): {_preview(unexpected)}")
    if problems:
        raise KeyError(f"{source} does not match {type(module).__name__}: " + "; ".join(problems))
    wrong = [f"{k} {tuple(state_dict[k].shape)} vs expected {tuple(v.shape)}"
             for k, v in own.items() if tuple(state_dict[k].shape) != tuple(v.shape)]
    if wrong:
        raise ValueError(f"{source}: size mismatch for {_preview(wrong, 5)}")
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{source}: tensor(s) {_preview(bad)} contain NaN or Inf")
    module.load_state_dict(state_dict, strict=True)


def exclude_from_checkpoints(module: nn.Module) -> nn.Module:
    """Re-register every buffer of ``module`` as non-persistent.

    The face model's bases (tens of MB) are rebuilt from code or the BFM file, so they do not
    belong in checkpoints; the ``face_model`` hyper-parameter of a kit checkpoint names them.
    """
    for submodule in module.modules():
        for name, buffer in list(submodule.named_buffers(recurse=False)):
            submodule.register_buffer(name, buffer, persistent=False)
    return module
