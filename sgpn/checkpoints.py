"""One loader for every checkpoint the kit knows: :func:`load`.

A kit checkpoint is a Lightning file (full, as training writes it, or exported by ``sgpn
export``, compact or not). Its weights are read into the inference modules directly, without
the training modules, so restoring a photo never imports the trainer:

* SGPN and its variants -> :class:`~sgpn.nets.restorer.SGPNRestorer`;
* the teacher and the LQ regressor -> :class:`~sgpn.nets.shape_prior.ShapePrior`;
* a retouching-reversal stage -> :class:`~sgpn.nets.frr_stage.FRRStage`;
* the release's ``checkpoints/`` folder -> its :class:`~sgpn.nets.restorer.SGPNRestorer`
  (:mod:`sgpn.photo.official`).

Files are read with ``weights_only=True``. What a file is follows from the weights it holds,
not from its class path, so checkpoints written before the package's layout changed
(``sgpn.training.SGPNModule``, ``sgpn.frr.FRRModule``) load the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from sgpn.face3d.face_model import load_face_model
from sgpn.nets.frr_stage import STAGES, FRRStage
from sgpn.nets.generator import SGPNGenerator, get_config
from sgpn.nets.regressor import CoefficientRegressor
from sgpn.nets.restorer import SGPNRestorer
from sgpn.nets.shape_prior import ShapePrior, build_shape_prior
from sgpn.paths import KIT_CHECKPOINTS, resolve_kit_path
from sgpn.photo.official import OFFICIAL_ENV, load_official
from sgpn.weights import exclude_from_checkpoints, load_strict

#: Where regressor weights sit inside the kit's Lightning checkpoints (teacher, SGPN).
REGRESSOR_PREFIXES = ("prior.regressor.", "shape_prior.regressor.")
#: Where an export records the run's training wall time (from the
#: :class:`~sgpn.training.callbacks.TrainingBudget` callback of the kit's configs).
TRAINING_MINUTES = "training_minutes"
#: The key that marks a compact export (float16 weights, training-only parts left out).
COMPACT_MARK = "sgpn_compact"


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint file's contents (``weights_only``), or a clear error when it is missing or
    is not a checkpoint. A relative path not found here is looked up from the kit's root."""
    try:
        path = resolve_kit_path(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}. `make checkpoints` trains the kit's "
                                f"models; the release's weights are a folder (sgpn restore --official)") from None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated file, a pickle of arbitrary objects, not a torch file
        raise ValueError(f"{path} is not a readable checkpoint: {err}") from err
    if not isinstance(data, Mapping):
        raise ValueError(f"{path} holds a {type(data).__name__}, not a checkpoint")
    return dict(data)


def load_regressor_weights(regressor: CoefficientRegressor, path: str | os.PathLike) -> CoefficientRegressor:
    """Load a regressor from a kit checkpoint (teacher or SGPN, Lightning format) or from a
    D3DFR / SGPN-release regressor file, strictly."""
    data = read_checkpoint(path)
    state = data.get("state_dict")
    if isinstance(state, Mapping):
        for prefix in REGRESSOR_PREFIXES:
            found = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if found:
                load_strict(regressor, found, f"{path} ({prefix}*)")
                return regressor
    return regressor.load_checkpoint(resolve_kit_path(path))


def training_minutes(path: str | os.PathLike) -> float | None:
    """The training wall time an exported checkpoint records, or ``None`` if it has none."""
    return read_checkpoint(path).get(TRAINING_MINUTES)


def _weights(state: Mapping[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith(prefixes)}


def _kind(data: Mapping) -> str:
    """``"sgpn"``, ``"teacher"`` or ``"frr"`` from the weights a kit checkpoint holds, else a
    ``ValueError`` naming what the file holds."""
    state = data.get("state_dict")
    hparams = data.get("hyper_parameters") or {}
    if isinstance(state, Mapping):
        if any(k.startswith("generator.") for k in state):
            return "sgpn"
        if any(k.startswith("prior.regressor.") for k in state):
            return "teacher"
        if hparams.get("stage") in STAGES and any(k.startswith("net.") for k in state):
            return "frr"
    keys = list(state) if isinstance(state, Mapping) else list(data)
    shown = ", ".join(map(str, keys[:6])) + (f", ... ({len(keys)} keys)" if len(keys) > 6 else "")
    what = f"class {hparams['_class_path']}, " if "_class_path" in hparams else ""
    if "net_recon" in data or "net_recon" in keys:
        hint = "; a D3DFR regressor file loads with CoefficientRegressor.from_checkpoint"
    elif any(str(k).startswith(("netE.", "netG.")) for k in keys):
        hint = "; the release's generator loads with its folder (sgpn.load(FOLDER), sgpn restore --official)"
    else:
        hint = ""
    raise ValueError(f"not a kit SGPN, teacher or retouching-reversal checkpoint ({what}keys: {shown}){hint}")


def _load_sgpn(data: Mapping, path: Path) -> SGPNRestorer:
    hp = {k: v for k, v in data["hyper_parameters"].items() if not k.startswith("_")}
    face_model = exclude_from_checkpoints(load_face_model(hp.get("face_model")))
    generator = SGPNGenerator(get_config(hp.get("generator", "tiny"), fusion=hp.get("fusion", "affb")))
    restorer = SGPNRestorer(generator, build_shape_prior(face_model, hp.get("regressor"), hp.get("alignment", "resize")),
                            hparams=hp, checkpoint=str(path))
    load_strict(restorer, _weights(data["state_dict"], ("generator.", "shape_prior.")), str(path))
    if "iterations" in data["state_dict"]:  # how long the model was trained (SGPNModule counts them)
        restorer.iterations = int(data["state_dict"]["iterations"])
    return restorer


def _load_teacher(data: Mapping, path: Path) -> ShapePrior:
    hp = data.get("hyper_parameters") or {}
    if "regressor" not in hp:
        raise ValueError(f"{path} is not a kit teacher checkpoint (no regressor hyper-parameters)")
    prior = build_shape_prior(load_face_model(hp.get("face_model")), hp["regressor"], hp.get("alignment", "resize"))
    prefix = "prior.regressor."
    load_strict(prior.regressor, {k[len(prefix):]: v for k, v in data["state_dict"].items() if k.startswith(prefix)},
                f"{path} ({prefix}*)")
    return prior


def _load_frr(data: Mapping, path: Path) -> FRRStage:
    hp = data["hyper_parameters"]
    stage = FRRStage(hp["stage"], hp.get("size", 64), hp.get("low_size", 32), hp.get("network"),
                     hp.get("sample_steps", 20))
    load_strict(stage, _weights(data["state_dict"], ("net.",)), str(path))
    return stage


LOADERS = {"sgpn": _load_sgpn, "teacher": _load_teacher, "frr": _load_frr}


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The eval-mode module of any checkpoint the kit knows (see the module's docstring): a kit
    checkpoint file, or the release's ``checkpoints/`` folder. Anything else gets an error
    naming what it holds."""
    path = Path(path)
    if path.is_dir():
        return load_official(path).to(device).eval()
    data = read_checkpoint(path)
    return LOADERS[_kind(data)](data, resolve_kit_path(path)).to(device).eval()


def kit_model_notice(path: str | os.PathLike) -> str | None:
    """What a user should know before restoring real photos with ``path``: kit models are
    small and trained on synthetic faces (``None`` for other weights)."""
    path = Path(path)
    if path.is_dir() or path.resolve().parent != KIT_CHECKPOINTS.resolve():
        return None
    return (f"{path.name} is the kit's 64 px teaching model, trained on synthetic faces only: on real photos it "
            f"shows the pipeline and blurs the face. For real restoration use the release's weights "
            f"(sgpn restore --official FOLDER, or set {OFFICIAL_ENV})")


def load_teacher(restorer: SGPNRestorer) -> ShapePrior:
    """The frozen teacher a kit SGPN model was trained with, for the landmark NME of evaluation
    tables: from the model's own file when it holds it (a full checkpoint), else from the file
    its ``teacher_ckpt`` names (a compact export leaves the teacher out)."""
    settings = getattr(restorer, "hparams", {})
    if getattr(restorer, "checkpoint", None) is None:
        raise ValueError("this model was not loaded from a kit checkpoint; pass a teacher checkpoint explicitly")
    source = Path(restorer.checkpoint)
    state = read_checkpoint(source).get("state_dict") or {}
    found = {k[len("teacher.regressor."):]: v for k, v in state.items() if k.startswith("teacher.regressor.")}
    if found:
        teacher = build_shape_prior(restorer.shape_prior.face_model, settings.get("regressor"),
                                    settings.get("alignment", "resize"))
        load_strict(teacher.regressor, found, f"{source} (teacher.regressor.*)")
    elif settings.get("teacher_ckpt"):
        teacher = load(resolve_kit_path(settings["teacher_ckpt"], beside=source))
    else:
        raise ValueError(f"{source} holds no teacher and names no teacher_ckpt; pass a teacher checkpoint explicitly")
    return teacher.eval().requires_grad_(False)
