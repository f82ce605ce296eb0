"""Evaluation: the paper's tasks and metrics over restoration methods, as tables.

``sgpn evaluate`` scores kit checkpoints (and the baselines every table needs) on

* the synthetic held-out set: the fixed test split of :class:`~sgpn.data.datamodule.FaceDataModule`,
  degraded for each task (blind restoration, SR ×4 / ×8 / ×16, inpainting), with ground-truth
  landmarks and coefficients; or
* a folder pair: LQ crops and their HQ originals, matched by relative path (the LQ is already
  degraded; the task is ``given``). The HQ landmarks are then the teacher's on the HQ crop.
* unpaired real LQ faces (WebPhoto-Test, LFW-Test: aligned crops with no original), scored as
  BFR papers score them, by FID and KID against a reference folder of HQ faces (FFHQ's first N)
  whose features are cached (:func:`unpaired_evaluation`; the task is ``real``).

Every method sees the same LQ images. Methods are the LQ input itself, bicubic for SR (the
networks' SR input), and any number of SGPN checkpoints (full model and variants A/B/C).
Metrics come from :class:`~sgpn.evaluation.metrics.MetricSuite`: PSNR, SSIM (whole image and face
region), LPIPS (or why it is unavailable), FID and KID on the standard Inception, the landmark
NME of one frozen teacher on every output, the vertex error of each checkpoint's shape prior
against the ground-truth mesh, and for inpainting the L1 error inside the holes.

The same module measures the paper's two claims about the shape prior and AFFB:
:func:`shape_from_lq` (a jointly trained regressor against the HQ-trained teacher on LQ
inputs, at several degradation strengths) and :func:`affb_statistics` (the AFFB masks on
occluder pixels against skin pixels), and :func:`restoration_bounds` says how much any restorer
could gain on the blind set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import Subset
from tqdm.auto import tqdm

from sgpn.checkpoints import load, load_regressor_weights, load_teacher
from sgpn.data.folder import FaceFolder
from sgpn.evaluation.inception import StandardInception, build_fid_kid, folder_features, kid_result
from sgpn.evaluation.kit_models import TASK_MODELS, VARIANTS, load_kit
from sgpn.evaluation.metrics import MetricResult, MetricSuite, teacher_landmarks
from sgpn.evaluation.tables import TASKS, Evaluation, Row
from sgpn.evaluation.test_sets import TASK_OPTIONS, degraded_test_set, folder_pair_test_set, synthetic_faces
from sgpn.nets.shape_prior import build_shape_prior

#: A restoration method: ``(test batch) -> (output in [0, 1], shape-prior coefficients or None)``.
Method = Callable[[Mapping[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor | None]]


def lq_input(batch: Mapping[str, torch.Tensor]):
    """The LQ input as it is (for SR: the network's bicubic-upsampled input)."""
    return batch["lq"], None


def nearest_input(scale: int) -> Method:
    """The SR low-resolution image enlarged by pixel replication: what the LQ input holds."""

    def method(batch: Mapping[str, torch.Tensor]):
        hq = batch["hq"]
        low = F.interpolate(hq, scale_factor=1 / scale, mode="bicubic", antialias=True).clamp(0, 1)
        return F.interpolate(low, size=hq.shape[-2:], mode="nearest"), None

    return method


def checkpoint_method(module) -> Method:
    """An :class:`~sgpn.nets.restorer.SGPNRestorer` (eval mode) as a method: output and z_3d (a model
    with a better prior than its regressor reads the batch's true coefficients)."""

    def method(batch: Mapping[str, torch.Tensor]):
        restored = module.restore(batch["lq"], batch.get("coeffs") if getattr(module, "prior_weight", 0) else None)
        return restored.output, restored.coeffs

    return method


def baselines(task: str) -> dict[str, Method]:
    """The baselines of a task's table: the LQ input, and for SR its pixels and bicubic."""
    if task.startswith("sr"):
        return {"LQ input (nearest)": nearest_input(int(task[2:])), "bicubic": lq_input}
    return {"LQ input": lq_input}



@torch.no_grad()
def score(method: Method, test_set: Mapping[str, torch.Tensor], teacher=None, face_model=None,
          lpips: bool = True, fid: bool = True, batch_size: int = 32,
          inception=None) -> tuple[dict[str, MetricResult], int]:
    """Every metric of one method on one test set (ground truth where the set has it; without
    ground-truth landmarks the teacher's landmarks on the HQ image stand in for them).
    ``inception``: a :class:`~sgpn.evaluation.inception.StandardInception` shared across calls; the HQ
    features of a synthetic set (fixed by its seed) are kept in its cache file."""
    suite = MetricSuite(lpips=lpips, fid=fid, teacher=teacher, inception=inception,
                        keep_targets="coeffs" in test_set,
                        face_model=face_model if "coeffs" in test_set else None)
    count = len(test_set["hq"])
    for start in range(0, count, batch_size):
        batch = {k: v[start:start + batch_size] for k, v in test_set.items()}
        output, coeffs = method(batch)
        landmarks = batch.get("landmarks")
        if landmarks is None and teacher is not None:
            landmarks = _crop_landmarks(teacher, batch["hq"])
        target_coeffs = batch.get("coeffs") if coeffs is not None else None
        suite.update(output.clamp(0, 1), batch["hq"], landmarks=landmarks,
                     coeffs=coeffs if target_coeffs is not None else None, target_coeffs=target_coeffs,
                     face_mask=batch.get("face_mask"), hole_mask=batch.get("inpaint_mask"))
    results = suite.compute()
    results.pop("vertex_error_posed", None)
    if not suite.per_image["vertex_error"]:  # a method without a mesh (the baselines)
        results.pop("vertex_error", None)
    return results, count


def _crop_landmarks(teacher, images: torch.Tensor) -> torch.Tensor:
    """The teacher's landmarks on ``images``, mapped from its frame back to crop pixels."""
    points = teacher_landmarks(teacher, images)
    if teacher.alignment != "resize":
        raise ValueError("folder-pair evaluation needs a teacher with alignment='resize'")
    k = teacher.frame_size / images.shape[-1]
    return (points + 0.5) / k - 0.5


def evaluate(checkpoints: Mapping[str, object], test_sets: Mapping[str, Mapping[str, torch.Tensor]],
             teacher=None, lpips: bool = True, fid: bool = True, batch_size: int = 32,
             progress: bool = True, only_on: Mapping[str, str] | None = None) -> Evaluation:
    """Baselines and every checkpoint (``{name: SGPNModule}``) on every test set
    (``{task: tensors}``), with one frozen ``teacher`` (a ShapePrior) for the NME.
    ``only_on``: ``{checkpoint name: task}`` for checkpoints trained for one task, scored on
    that task's test set only."""
    face_model = teacher.face_model if teacher is not None else None
    inception = StandardInception() if fid else None
    only_on = only_on or {}
    jobs = [(task, name, method) for task in test_sets
            for name, method in [*baselines(task).items(),
                                 *((n, checkpoint_method(m)) for n, m in checkpoints.items())]
            if only_on.get(name, task) == task]
    evaluation = Evaluation()
    for task, name, method in tqdm(jobs, desc="evaluating", unit="row", disable=not progress):
        results, count = score(method, test_sets[task], teacher, face_model, lpips, fid, batch_size, inception)
        evaluation.rows.append(Row(task, name, results, count))
    return evaluation


def unpaired_evaluation(checkpoints: Mapping[str, object], lq_dir: str | os.PathLike,
                        reference_dir: str | os.PathLike, batch_size: int = 32, progress: bool = True) -> Evaluation:
    """FID and KID of the LQ faces themselves and of each checkpoint's restorations of them,
    against a reference folder (its features cached by content, :func:`folder_features`)."""
    size = next(iter(checkpoints.values())).size
    lq = FaceFolder(lq_dir, size)
    inception = StandardInception()
    reference = folder_features(reference_dir, size, inception, progress=progress)
    if len(lq) < 2 or len(reference) < 2:
        raise ValueError(f"FID and KID need at least 2 images on each side: {len(lq)} in {lq_dir}, "
                         f"{len(reference)} in {reference_dir}")
    methods = {"input": None, **checkpoints}
    evaluation = Evaluation(notes=[f"against {len(reference)} reference faces in {reference_dir}, at {size} px"])
    for name, module in tqdm(methods.items(), desc="evaluating", unit="row", disable=not progress):
        fid, kid = build_fid_kid(inception)
        fid.update(reference, real=True)
        kid.update(reference, real=True)
        for start in range(0, len(lq), batch_size):
            images = torch.stack([lq[i]["hq"] for i in range(start, min(start + batch_size, len(lq)))])
            output = images if module is None else module.restore(images).output.clamp(0, 1)
            fid.update(output, real=False)
            kid.update(output, real=False)
        kid_mean, kid_std = kid_result(kid, min(len(lq), len(reference)))
        evaluation.rows.append(Row("real", name, {"fid": MetricResult(fid.compute().item()),
                                                  "kid": MetricResult(kid_mean, spread=kid_std)}, len(lq)))
    return evaluation.without_empty_columns()


#: Held-out faces of the ablation table: blind restoration (enough for FID to separate the
#: rows), and the other tasks (their rows report KID with its spread). Each image of a row costs
#: one Inception forward (about 9 a second on 2 cores): with 512 + 128, ``sgpn bench ablation``'s
#: 29 rows took 18 minutes (5,632 forwards; the HQ set's features are kept on disk).
ABLATION_IMAGES = 512
TASK_IMAGES = 128


def ablation_evaluation(num_images: int = ABLATION_IMAGES, task_images: int = TASK_IMAGES,
                        lpips: bool = True, progress: bool = False) -> Evaluation:
    """The kit's checkpoints (:data:`VARIANTS`) and the baselines on the first ``num_images``
    held-out faces at the blind degradation, and on the first ``task_images`` of them for SR
    x4/x8/x16 and inpainting (``sgpn bench ablation`` and ``figures/ablation.*``), where the
    models trained for one of those tasks (:data:`TASK_MODELS`) join them."""
    modules = {name: load_kit(name) for name in [*VARIANTS, *TASK_MODELS]}
    faces = synthetic_faces(modules["full SGPN"].size, num_images)
    test_sets = {"blind": degraded_test_set(faces, "blind")}
    few = Subset(faces, range(min(task_images, num_images)))
    test_sets.update({task: degraded_test_set(few, task) for task in TASKS if task != "blind"})
    return evaluate(modules, test_sets, load_teacher(modules["full SGPN"]), lpips=lpips, progress=progress,
                    only_on={name: task for name, (task, _) in TASK_MODELS.items()})


def parse_checkpoints(specs: Iterable[str]) -> dict[str, Path]:
    """``NAME=PATH`` (or a bare ``PATH``, named by its file stem) -> ``{name: path}``."""
    checkpoints: dict[str, Path] = {}
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path = Path(path)
        name = name or path.stem
        if name in checkpoints:
            raise ValueError(f"two checkpoints are named {name!r}; name them with NAME=PATH")
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {name!r} not found: {path}")
        checkpoints[name] = path
    return checkpoints


def data_settings(config: str | os.PathLike | None) -> dict:
    """Size, test length, occluder share and degradation options of a training config's
    synthetic data (``data: init_args``), so a model is evaluated on the held-out set and the
    degradation it was trained with."""
    if config is None:
        return {}

    settings = yaml.safe_load(Path(config).read_text()) or {}
    data = (settings.get("data") or {}).get("init_args") or {}
    if data.get("source", "synthetic") != "synthetic":
        raise ValueError(f"{config}: its data source is a folder; evaluate on a folder with --pair LQ HQ")
    return {"size": data.get("size", 64), "num_images": data.get("test_length", 256),
            "occluder_prob": data.get("occluder_prob", 0.5),
            "options": {data.get("degradation", "blind"): data.get("degradation_kwargs") or {}}}


def evaluate_command(checkpoints: Iterable[str], tasks: Iterable[str] = TASKS, config: str | None = None,
                     pair: tuple[str, str] | None = None, unpaired: tuple[str, str] | None = None,
                     num_images: int | None = None,
                     teacher: str | None = None, lpips: bool = True, fid: bool = True,
                     out: str | os.PathLike = "results", name: str = "evaluation", caption: str = "",
                     progress: bool = True) -> list[Path]:
    """``sgpn evaluate``: load checkpoints, build the test sets, score, write the tables."""
    modules = {n: load(p) for n, p in parse_checkpoints(checkpoints).items()}
    if not modules:
        raise ValueError("give at least one checkpoint (--ckpt NAME=PATH)")
    sizes = {n: m.size for n, m in modules.items()}
    first = next(iter(modules.values()))
    if len(set(sizes.values())) > 1:
        raise ValueError(f"checkpoints of different resolutions cannot share a table: {sizes}")
    if unpaired is not None:
        return unpaired_evaluation(modules, *unpaired, progress=progress).write(out, name, caption)
    if teacher is None:
        frozen_teacher = load_teacher(first)
    else:
        frozen_teacher = build_shape_prior(first.shape_prior.face_model, first.hparams["regressor"],
                                           first.hparams["alignment"])
        load_regressor_weights(frozen_teacher.regressor, teacher)
    frozen_teacher.eval().requires_grad_(False)
    if pair is not None:
        test_sets = {"given": folder_pair_test_set(*pair, first.size)}
    else:
        settings = {"size": first.size, "num_images": 256, "occluder_prob": 0.5, **data_settings(config)}
        if settings["size"] != first.size:
            raise ValueError(f"{config} trains at {settings['size']} px but the checkpoints are {first.size} px")
        settings["num_images"] = num_images or settings["num_images"]
        options = {**TASK_OPTIONS, **settings.pop("options", {})}
        faces = synthetic_faces(**settings)
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; choose from {', '.join(TASKS)}")
        test_sets = {task: degraded_test_set(faces, task, options.get(task, {})) for task in tasks}
    evaluation = evaluate(modules, test_sets, frozen_teacher, lpips, fid, progress=progress)
    return evaluation.write(out, name, caption)
