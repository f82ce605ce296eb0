"""Checkpoint files: reading regressor weights from kit, D3DFR and release files, exporting
small shareable copies, and loading kit SGPN models and shape priors from them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch

from sgpn.face_model import FaceModel, load_face_model
from sgpn.regressor import CoefficientRegressor
from sgpn.shape_prior import ShapePrior

if TYPE_CHECKING:
    from sgpn.training import SGPNModule

#: Where regressor weights sit inside the kit's Lightning checkpoints.
REGRESSOR_PREFIXES = ("prior.regressor.", "shape_prior.regressor.")
#: The kit's root folder, which configs name checkpoints relative to.
KIT_ROOT = Path(__file__).resolve().parents[1]


def read_regressor_checkpoint(path: Path):
    """The contents of a regressor checkpoint file, or a clear error when it is missing. A
    relative path not found here is looked up from the kit's root, since configs name
    ``kit_checkpoints/...`` relative to it and a run may work in another folder."""
    if not path.is_file() and not path.is_absolute() and (KIT_ROOT / path).is_file():
        path = KIT_ROOT / path
    if not path.is_file():
        raise FileNotFoundError(f"regressor checkpoint not found: {path}. `make shape-prior` trains the "
                                f"kit's teacher (configs/teacher_tiny.yaml) and LQ regressor")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_regressor_weights(regressor: CoefficientRegressor, path: str | os.PathLike) -> CoefficientRegressor:
    """Load a regressor from a kit checkpoint (teacher or SGPN, Lightning format) or from a
    D3DFR / SGPN-release regressor file, strictly."""
    from sgpn.weights import load_strict

    path = Path(path)
    data = read_regressor_checkpoint(path)
    state = data.get("state_dict") if isinstance(data, Mapping) else None
    if isinstance(state, Mapping):
        for prefix in REGRESSOR_PREFIXES:
            found = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if found:
                load_strict(regressor, found, f"{path} ({prefix}*)")
                return regressor
    return regressor.load_checkpoint(path)


#: What a compact export leaves out of an SGPN checkpoint: the discriminator (only training
#: needs it) and the frozen teacher (rebuilt from ``teacher_ckpt`` when loading).
COMPACT_DROPS = ("discriminator.", "teacher.")


#: Where an export records the run's training wall time (from the
#: :class:`~sgpn.callbacks.TrainingBudget` callback of the kit's configs; it counts across resumes).
TRAINING_MINUTES = "training_minutes"


def training_minutes(path: str | os.PathLike) -> float | None:
    """The training wall time an exported checkpoint records, or ``None`` if it has none."""
    return torch.load(path, map_location="cpu", weights_only=True).get(TRAINING_MINUTES)


def export_checkpoint(source: str | os.PathLike, target: str | os.PathLike, compact: bool = False) -> Path:
    """Write a small copy of a Lightning checkpoint for sharing: weights and hyper-parameters
    only (no optimiser, loop or callback state). It loads with ``load_from_checkpoint`` and
    ``sgpn restore``, but cannot resume training.

    A :class:`~sgpn.callbacks.TrainingBudget` callback's time is kept as ``training_minutes``.
    Teacher modules leave out the frozen teacher of an LQ fine-tune (the file ``teacher_ckpt``
    names holds it): :func:`load_shape_prior` loads the regressor.

    ``compact`` (SGPN checkpoints): also leave out the discriminator and the frozen teacher and
    store the weights as float16, about a quarter of the size; :func:`load_sgpn` loads it (the
    teacher comes back from the checkpoint named by ``teacher_ckpt``). The kit commits its tiny
    models this way, and its teacher, LQ regressor and retouching-reversal stages (float16 only;
    loading copies the values into the float32 networks).
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
        from sgpn.frr import FRRModule

        state = small["state_dict"]
        if any(k.startswith("generator.") for k in state):
            drops = COMPACT_DROPS
        elif data["hyper_parameters"].get("stage") in FRRModule.STAGES or any(k.startswith("prior.") for k in state):
            drops = ()  # a retouching-reversal stage or a teacher holds nothing but its network
        else:
            raise ValueError(f"{source}: only SGPN, teacher and retouching-reversal checkpoints have a compact form")
        small["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in state.items()
                               if not k.startswith(drops)}
        small["sgpn_compact"] = {"dropped": list(drops), "dtype": "float16"}
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(small, target)
    return target


def load_sgpn(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> SGPNModule:
    """An :class:`~sgpn.training.SGPNModule` from a kit checkpoint (full, exported or compact),
    in eval mode."""
    from sgpn.training import SGPNModule

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SGPN checkpoint not found: {path}")
    data = torch.load(path, map_location="cpu", weights_only=True)
    state = data.get("state_dict", {}) if isinstance(data, Mapping) else {}
    if not any(k.startswith("generator.") for k in state):
        kind = "a teacher checkpoint" if any(k.startswith("prior.") for k in state) else "not a kit SGPN checkpoint"
        raise ValueError(f"{path} is {kind}: it holds no generator weights")
    if "sgpn_compact" not in data:
        module = SGPNModule.load_from_checkpoint(path, map_location=map_location, weights_only=True)
        return module.eval()
    module = SGPNModule(**{k: v for k, v in data["hyper_parameters"].items() if not k.startswith("_")})
    expected = {k for k in module.state_dict() if not k.startswith(COMPACT_DROPS)}
    if set(state) != expected:
        raise KeyError(f"{path} does not match SGPNModule: missing {sorted(expected - set(state))[:5]}, "
                       f"unexpected {sorted(set(state) - expected)[:5]}")
    module.load_state_dict(state, strict=False)  # float16 values are copied into float32
    teacher = module.hparams.teacher_ckpt
    if teacher:
        load_regressor_weights(module.teacher.regressor, resolve_kit_path(teacher, path))
    return module.to(map_location).eval()


def load_shape_prior(path: str | os.PathLike, face_model: FaceModel | None = None) -> ShapePrior:
    """The :class:`ShapePrior` of a kit teacher or LQ-regressor checkpoint, in eval mode
    (the regressor its hyper-parameters describe, with its weights; no training state)."""
    from sgpn.training import build_prior

    path = Path(path)
    data = read_regressor_checkpoint(path)
    hparams = data.get("hyper_parameters") if isinstance(data, Mapping) else None
    if not isinstance(hparams, Mapping) or "regressor" not in hparams:
        raise ValueError(f"{path} is not a kit teacher checkpoint (no regressor hyper-parameters)")
    face_model = face_model if face_model is not None else load_face_model(hparams.get("face_model"))
    prior = build_prior(face_model, hparams["regressor"], hparams.get("alignment", "resize"))
    load_regressor_weights(prior.regressor, path)
    return prior.eval()


def resolve_kit_path(name: str | os.PathLike, beside: Path) -> Path:
    """A path from a checkpoint's hyper-parameters: as given, else relative to the kit's root
    (configs name ``kit_checkpoints/...`` relative to it), else beside the checkpoint."""
    for candidate in (Path(name), KIT_ROOT / name, beside.parent / Path(name).name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{beside} needs {name}, which was not found (as given, in the kit, "
                            f"or beside the checkpoint)")
