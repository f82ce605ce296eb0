"""Evaluation: the paper's tasks and metrics over restoration methods, as tables.

``sgpn evaluate`` scores kit checkpoints (and the baselines every table needs) on

* the synthetic held-out set: the fixed test split of :class:`~sgpn.data.FaceDataModule`,
  degraded for each task (blind restoration, SR ×4 / ×8 / ×16, inpainting), with ground-truth
  landmarks and coefficients; or
* a folder pair: LQ crops and their HQ originals, matched by relative path (the LQ is already
  degraded; the task is ``given``). The HQ landmarks are then the teacher's on the HQ crop.

Every method sees the same LQ images. Methods are the LQ input itself, bicubic for SR (the
networks' SR input), and any number of SGPN checkpoints (full model and variants A/B/C).
Metrics come from :class:`~sgpn.metrics.MetricSuite`: PSNR, SSIM (whole image and face
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

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sgpn.metrics import MetricResult, MetricSuite, landmark_nme, mean_over_images, teacher_landmarks, vertex_error

#: Tasks of the paper, as degradation names (see :func:`sgpn.degradations.build_degradation`).
TASKS = ("blind", "sr4", "sr8", "sr16", "inpaint")
TASK_TITLES = {"blind": "blind restoration", "sr4": "SR ×4", "sr8": "SR ×8", "sr16": "SR ×16",
               "inpaint": "inpainting", "given": "given LQ", "retouch": "retouching reversal"}
#: Table headings of the metrics (arrows: which way is better).
METRIC_TITLES = {"psnr": "PSNR ↑", "ssim": "SSIM ↑", "ssim_face": "SSIM face ↑", "lpips": "LPIPS ↓",
                 "fid": "FID ↓", "kid": "KID ↓", "nme": "NME ↓", "vertex_error": "vertex error ↓",
                 "hole_l1": "hole L1 ↓", "id_error": "identity error ↓", "vgg": "VGG similarity ↑",
                 "clip": "CLIP similarity ↑"}
#: The columns of a restoration table (the rest belong to retouching reversal's).
RESTORATION_METRICS = ("psnr", "ssim", "ssim_face", "lpips", "fid", "kid", "nme", "vertex_error", "hole_l1")
#: Options of each task's degradation unless a training config gives its own: the kit's models
#: train on GFPGAN's blind ranges with the blur in pixels of a 512 px face (configs/tiny.yaml).
TASK_OPTIONS: dict[str, dict] = {"blind": {"reference_size": 512}}
#: Blind degradations of increasing strength, for the shape-from-LQ comparison.
DEGRADATION_LEVELS: dict[str, dict] = {
    "mild": dict(sigma=(0.1, 3.0), downscale=(0.8, 2.0), noise=(0.0, 5.0), jpeg_quality=(80, 100)),
    "default": {},
    "severe": dict(sigma=(5.0, 10.0), downscale=(4.0, 8.0), noise=(10.0, 20.0), jpeg_quality=(60, 80)),
}
#: AFFB masks are analysed at these resolutions and above.
AFFB_MIN_RESOLUTION = 16

#: The kit's checkpoints (``make checkpoints``, ``make ablation``) and the ablation's rows.
KIT_DIR = Path(__file__).resolve().parents[1] / "kit_checkpoints"
VARIANTS = {"full SGPN": "sgpn_tiny.ckpt", "A: no F_3d": "sgpn_tiny_a_no_f3d.ckpt",
            "B: no AFFB": "sgpn_tiny_b_no_affb.ckpt", "C: no mesh losses": "sgpn_tiny_c_no_mesh_losses.ckpt"}
#: Kit models trained for one task other than blind restoration (the paper trains one model per
#: task), with the task each is evaluated on: ``{row name: (task, checkpoint file)}``.
TASK_MODELS = {"SGPN for inpainting": ("inpaint", "sgpn_tiny_inpaint.ckpt")}

#: A restoration method: ``(test batch) -> (output in [0, 1], shape-prior coefficients or None)``.
Method = Callable[[Mapping[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor | None]]


def load_kit(name: str = "full SGPN"):
    """One of the kit's tiny SGPN checkpoints by its row name in :data:`VARIANTS` or
    :data:`TASK_MODELS` (eval mode)."""
    from sgpn.checkpoints import load_sgpn

    files = {**VARIANTS, **{row: file for row, (_, file) in TASK_MODELS.items()}}
    if name not in files:
        raise KeyError(f"unknown kit model {name!r}; choose from {', '.join(files)}")
    path = KIT_DIR / files[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: `make checkpoints` trains the full model, "
                                f"`make ablation` the variants and `make tasks` the task models")
    return load_sgpn(path)


# ----------------------------------------------------------------------------------------------
# Test sets
# ----------------------------------------------------------------------------------------------


def synthetic_faces(size: int = 64, num_images: int = 256, occluder_prob: float = 0.5):
    """The synthetic held-out faces (undegraded): the fixed test split of
    :class:`~sgpn.data.FaceDataModule`, identical for every training seed."""
    from sgpn.data import FaceDataModule

    data = FaceDataModule(size=size, train_length=0, val_length=0, test_length=num_images,
                          occluder_prob=occluder_prob, cache=True)
    data.setup("test")
    return data.datasets["test"].faces


def degraded_test_set(faces, task: str, degradation_kwargs: dict | None = None,
                      batch_size: int = 64) -> dict[str, torch.Tensor]:
    """``faces`` with their LQ versions for ``task``, stacked into one dict of tensors (and
    ``degradation``: the parameters drawn for each image, for captions).

    The LQ images are those of ``FaceDataModule(degradation=task, degradation_kwargs=...)
    .test_dataloader()``: seeded by (split, index), the same for every method and run.
    ``degradation_kwargs`` default to :data:`TASK_OPTIONS`.
    """
    from torch.utils.data import DataLoader

    from sgpn.data import DegradedFaces, collate_faces
    from sgpn.degradations import build_degradation

    options = TASK_OPTIONS.get(task, {}) if degradation_kwargs is None else degradation_kwargs
    dataset = DegradedFaces(faces, build_degradation(task, **options), 0, "test")
    batches = list(DataLoader(dataset, batch_size=batch_size, collate_fn=collate_faces))
    test_set = {key: torch.cat([b[key] for b in batches]) for key, value in batches[0].items()
                if isinstance(value, torch.Tensor)}
    test_set["degradation"] = [params for b in batches for params in b["degradation"]]
    return test_set


def folder_pair_test_set(lq_dir: str | os.PathLike, hq_dir: str | os.PathLike, size: int) -> dict:
    """LQ crops and HQ originals matched by relative path without suffix, resized to ``size``.

    Files on one side only are named in the error: a table over a partial pairing would be
    silently wrong.
    """
    from sgpn.data import FaceFolder

    sides = {name: FaceFolder(path, size) for name, path in (("lq", lq_dir), ("hq", hq_dir))}
    keys = {name: {Path(f).relative_to(folder.root).with_suffix("").as_posix(): i
                   for i, f in enumerate(folder.files)} for name, folder in sides.items()}
    unmatched = {name: sorted(set(keys[name]) - set(keys[other]))
                 for name, other in (("lq", "hq"), ("hq", "lq"))}
    if any(unmatched.values()):
        detail = "; ".join(f"only in {name}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
                           for name, names in unmatched.items() if names)
        raise ValueError(f"the LQ folder {lq_dir} and the HQ folder {hq_dir} do not pair up by file "
                         f"name ({detail})")
    names = sorted(keys["lq"])
    if not names:
        raise FileNotFoundError(f"no images found in {lq_dir}")
    return {side: torch.stack([sides[side][keys[side][n]]["hq"] for n in names]) for side in ("lq", "hq")}


# ----------------------------------------------------------------------------------------------
# Methods
# ----------------------------------------------------------------------------------------------


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
    """An :class:`~sgpn.training.SGPNModule` (eval mode) as a method: output and z_3d."""

    def method(batch: Mapping[str, torch.Tensor]):
        restored = module.restore(batch["lq"])
        return restored.output, restored.coeffs

    return method


def baselines(task: str) -> dict[str, Method]:
    """The baselines of a task's table: the LQ input, and for SR its pixels and bicubic."""
    if task.startswith("sr"):
        return {"LQ input (nearest)": nearest_input(int(task[2:])), "bicubic": lq_input}
    return {"LQ input": lq_input}


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of a results table."""

    task: str
    method: str
    results: dict[str, MetricResult]
    num_images: int

    def cells(self, digits: int = 4) -> dict[str, str]:
        return {name: ("—" if name not in self.results else
                       self.results[name].format(2 if name in ("psnr", "fid") else digits))
                for name in METRIC_TITLES}


@dataclass
class Evaluation:
    """Rows of a results table, with the notes that belong under it."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metrics: tuple[str, ...] = RESTORATION_METRICS  # the table's metric columns

    def markdown(self, caption: str = "") -> str:
        """A markdown table (numbers; unavailable metrics named once in a note)."""
        reasons = {}
        lines = ([f"{caption}", ""] if caption else [])
        lines += ["| task | method | " + " | ".join(METRIC_TITLES[m] for m in self.metrics) + " |",
                  "|" + "---|" * (len(self.metrics) + 2)]
        for row in self.rows:
            cells, formatted = [], row.cells()
            for name in self.metrics:  # in the header's order
                cell, result = formatted[name], row.results.get(name)
                if result is not None and result.value is None:
                    reasons[name] = result.reason
                    cell = "unavailable"
                cells.append(cell)
            lines.append(f"| {TASK_TITLES.get(row.task, row.task)} | {row.method} | " + " | ".join(cells) + " |")
        notes = [f"{METRIC_TITLES[name].split()[0]}: {reason}" for name, reason in reasons.items()]
        notes += self.notes
        if notes:
            lines += [""] + [f"- {note}" for note in notes]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | os.PathLike, name: str = "evaluation", caption: str = "") -> list[Path]:
        """``<name>.md`` and ``<name>.csv`` (numbers at full precision, each metric followed by
        its spread; empty when unavailable). :func:`read_evaluation` reads the CSV back."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        markdown = out_dir / f"{name}.md"
        markdown.write_text(self.markdown(caption))
        table = out_dir / f"{name}.csv"
        with table.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["task", "method", "images", *(f"{m}{suffix}" for m in self.metrics
                                                           for suffix in ("", SPREAD_SUFFIX))])
            for row in self.rows:
                cells = []
                for m in self.metrics:
                    result = row.results.get(m)
                    cells += ["", ""] if result is None or result.value is None else \
                        [result.value, "" if result.spread is None else result.spread]
                writer.writerow([row.task, row.method, row.num_images, *cells])
        return [markdown, table]

    def result(self, task: str, method: str, metric: str) -> MetricResult | None:
        """One cell of the table as a :class:`~sgpn.metrics.MetricResult` (``None`` if absent)."""
        for row in self.rows:
            if row.task == task and row.method == method:
                return row.results.get(metric)
        raise KeyError(f"no row for task {task!r} and method {method!r}")

    def value(self, task: str, method: str, metric: str) -> float:
        """One number of the table (``nan`` when the metric is unavailable)."""
        result = self.result(task, method, metric)
        return math.nan if result is None or result.value is None else result.value


#: The CSV column of a metric's spread is the metric's name with this suffix.
SPREAD_SUFFIX = "_spread"


def read_evaluation(path: str | os.PathLike) -> Evaluation:
    """An :class:`Evaluation` from the CSV that :meth:`Evaluation.write` wrote."""
    with Path(path).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path} holds no evaluation rows")
    metrics = tuple(c for c in rows[0] if c in METRIC_TITLES)
    evaluation = Evaluation(metrics=metrics)
    for row in rows:
        results = {m: MetricResult(float(row[m]), spread=float(row[m + SPREAD_SUFFIX])
                                   if row.get(m + SPREAD_SUFFIX) else None) for m in metrics if row[m]}
        evaluation.rows.append(Row(row["task"], row["method"], results, int(row["images"])))
    return evaluation


@torch.no_grad()
def score(method: Method, test_set: Mapping[str, torch.Tensor], teacher=None, face_model=None,
          lpips: bool = True, fid: bool = True, batch_size: int = 32,
          inception=None) -> tuple[dict[str, MetricResult], int]:
    """Every metric of one method on one test set (ground truth where the set has it; without
    ground-truth landmarks the teacher's landmarks on the HQ image stand in for them).
    ``inception``: a :class:`~sgpn.inception.StandardInception` shared across calls; the HQ
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
    from sgpn.inception import StandardInception

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
    from torch.utils.data import Subset

    modules = {name: load_kit(name) for name in [*VARIANTS, *TASK_MODELS]}
    faces = synthetic_faces(modules["full SGPN"].size, num_images)
    test_sets = {"blind": degraded_test_set(faces, "blind")}
    few = Subset(faces, range(min(task_images, num_images)))
    test_sets.update({task: degraded_test_set(few, task) for task in TASKS if task != "blind"})
    return evaluate(modules, test_sets, modules["full SGPN"].teacher, lpips=lpips, progress=progress,
                    only_on={name: task for name, (task, _) in TASK_MODELS.items()})


# ----------------------------------------------------------------------------------------------
# The paper's claims
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def shape_from_lq(regressors: Mapping[str, object], faces, levels: Iterable[str] = DEGRADATION_LEVELS,
                  batch_size: int = 64) -> Evaluation:
    """Vertex error and landmark NME against ground truth of shape priors (``{name: ShapePrior}``)
    reading LQ faces, at each degradation level of :data:`DEGRADATION_LEVELS` (and on HQ)."""
    evaluation = Evaluation(metrics=("nme", "vertex_error"))
    for level in ["HQ", *levels]:
        options = {**TASK_OPTIONS["blind"], **DEGRADATION_LEVELS.get(level, {})}
        test_set = degraded_test_set(faces, "blind", options, batch_size)
        images = test_set["hq"] if level == "HQ" else test_set["lq"]
        for name, prior in regressors.items():
            prior.eval()
            coeffs = torch.cat([prior.regressor(prior.to_regressor_frame(chunk * 2 - 1))
                                for chunk in images.split(batch_size)])
            landmarks = prior.face_model.landmarks_2d(coeffs, prior.frame_size)
            target = prior.points_to_frame(test_set["landmarks"], images.shape[-1])
            results = {"nme": mean_over_images([landmark_nme(landmarks, target)]),
                       "vertex_error": mean_over_images([vertex_error(prior.face_model, coeffs, test_set["coeffs"])])}
            evaluation.rows.append(Row(f"blind ({level})" if level != "HQ" else "HQ (no degradation)",
                                       name, results, len(images)))
    return evaluation


#: Metrics where a lower value is better.
LOWER_IS_BETTER = {"lpips", "fid", "kid", "nme", "vertex_error", "hole_l1", "id_error"}


@dataclass(frozen=True)
class Claim:
    """A statement about a table and what the numbers say: ``holds``, ``fails`` or
    ``within noise`` (the gap is not larger than its spread), with the numbers as ``detail``."""

    statement: str
    verdict: str
    detail: str

    def __str__(self) -> str:
        return f"{self.verdict}: {self.statement} ({self.detail})"


def _cell(evaluation: Evaluation, task: str, method: str, metric: str) -> MetricResult:
    result = evaluation.result(task, method, metric)
    if result is None or result.value is None:
        raise ValueError(f"{metric} of {method!r} on {task!r} is not in the table")
    return result


def _verdict(gap: float, noise: float | None) -> str:
    """``gap`` > 0 means the claim's side is better."""
    if noise is not None and abs(gap) <= noise:
        return "within noise"
    return "holds" if gap > 0 else "fails"


def _noise(*results: MetricResult) -> float | None:
    spreads = [r.spread for r in results]
    return None if any(s is None for s in spreads) else math.hypot(*spreads)


def beats(evaluation: Evaluation, task: str, method: str, other: str, metric: str) -> Claim:
    """``method`` is better than ``other`` on ``metric``. The noise is the two spreads combined;
    FID has none of its own, so a FID gap (either way) counts only when KID agrees beyond KID's
    spread, and is within noise otherwise."""
    sign = -1 if metric in LOWER_IS_BETTER else 1
    a, b = _cell(evaluation, task, method, metric), _cell(evaluation, task, other, metric)
    gap = sign * (a.value - b.value)
    verdict = _verdict(gap, _noise(a, b))
    if metric == "fid":  # KID is the arbiter: a finding only when it agrees beyond its spread
        ka, kb = _cell(evaluation, task, method, "kid"), _cell(evaluation, task, other, "kid")
        by_kid = _verdict(kb.value - ka.value, _noise(ka, kb))
        verdict = verdict if by_kid == verdict else "within noise"
    title = METRIC_TITLES[metric].rsplit(" ", 1)[0]  # without the arrow
    return Claim(f"{method} beats {other} on {title} ({TASK_TITLES.get(task, task)})", verdict,
                 f"{a.format(4)} against {b.format(4)}")


def reaches(evaluation: Evaluation, task: str, method: str, other: str, metric: str,
            factor: float = 1.0, margin: float = 0.0) -> Claim:
    """``method`` reaches ``factor`` x ``other`` + ``margin`` on ``metric`` (at most, for a
    lower-is-better metric; at least otherwise); within noise when the distance to that bar is
    not larger than the method's spread."""
    a, b = _cell(evaluation, task, method, metric), _cell(evaluation, task, other, metric)
    bar = factor * b.value + margin
    lower = metric in LOWER_IS_BETTER
    gap = (bar - a.value) if lower else (a.value - bar)
    verdict = "holds" if gap >= 0 else _verdict(gap, a.spread)
    relation = "≤" if lower else "≥"
    scale = f"{factor:g} × " if factor != 1 else ""
    plus = f" {margin:+g}" if margin else ""
    title = METRIC_TITLES[metric].rsplit(" ", 1)[0]  # without the arrow
    return Claim(f"{method}: {title} {relation} {scale}{other}'s{plus} ({TASK_TITLES.get(task, task)})",
                 verdict, f"{a.format(4)} against a bar of {bar:.4f}")


def restoration_claims(evaluation: Evaluation, full: str = "full SGPN", variants: Iterable[str] = (),
                       lq: str = "LQ input") -> list[Claim]:
    """The kit's targets for SGPN on a blind-restoration table (and SR and inpainting where
    the table has them): FID ≤ 0.6 × the input's, SSIM on the face ≥ the input's + 0.03, PSNR
    not below the input's, NME ≤ 0.8 × the input's; the full model beats each variant on FID
    and NME; SR: lower FID than bicubic; inpainting: L1 in the holes ≤ 0.5 × the input's (for
    the model trained for inpainting, where the table has it)."""
    claims = [reaches(evaluation, "blind", full, lq, "fid", factor=0.6),
              reaches(evaluation, "blind", full, lq, "ssim_face", margin=0.03),
              reaches(evaluation, "blind", full, lq, "psnr"),
              reaches(evaluation, "blind", full, lq, "nme", factor=0.8)]
    claims += [beats(evaluation, "blind", full, variant, metric) for variant in variants for metric in ("fid", "nme")]
    tasks = {row.task for row in evaluation.rows}
    claims += [beats(evaluation, task, full, "bicubic", "fid") for task in ("sr4", "sr8", "sr16") if task in tasks]
    if "inpaint" in tasks:
        claims.append(reaches(evaluation, "inpaint", task_model(evaluation, "inpaint", full), lq, "hole_l1", factor=0.5))
    return claims


def task_model(evaluation: Evaluation, task: str, full: str = "full SGPN") -> str:
    """The row of the model trained for ``task`` (:data:`TASK_MODELS`) where the table has one,
    else ``full``: the paper trains one model per task and states each task's claim for it."""
    rows = {row.method for row in evaluation.rows if row.task == task}
    return next((name for name, (t, _) in TASK_MODELS.items() if t == task and name in rows), full)


#: The reconstructions :func:`restoration_bounds` scores, by the test-set key holding each.
BOUND_METHODS = {
    "LQ input": "lq",
    "ideal denoiser: LQ without noise and JPEG": "lq_noise_free",
    "ideal shape prior: exact 3DMM render on the visible face": "lq_with_render",
    "ideal face restorer: true HQ on the visible face": "lq_with_face",
}


@torch.no_grad()
def bound_reconstructions(faces, degradation_kwargs: dict | None = None,
                          batch_size: int = 64) -> dict[str, torch.Tensor]:
    """The blind test set (``degraded_test_set``) plus the reconstructions that cheat, under the
    keys of :data:`BOUND_METHODS`, and ``visible``: the rendered face not under an occluder.

    Each keeps the LQ image and is handed one piece of the truth: the same blur and
    downsampling without the noise and JPEG (what a perfect denoiser would recover), the exact
    3DMM render of the true coefficients pasted on the visible face (a perfect shape prior
    used as is: it lacks the skin detail, eyes and lighting nuances of the photo-like HQ), or
    the true HQ pixels on the visible face (face restored perfectly, hair, background and
    occluders left as degraded).
    """
    from sgpn.face_model import load_face_model
    from sgpn.renderer import Renderer

    options = TASK_OPTIONS["blind"] if degradation_kwargs is None else degradation_kwargs
    test_set = degraded_test_set(faces, "blind", options, batch_size)
    noise_free = degraded_test_set(faces, "blind", {**options, "noise": None, "jpeg_quality": None}, batch_size)
    model = load_face_model()
    renderer = Renderer(test_set["hq"].shape[-1], backend="fast")
    render = torch.cat([renderer(model(c, renderer.image_size), model.faces).image
                        for c in test_set["coeffs"].split(batch_size)]).clamp(0, 1)
    visible = test_set["face_mask"] * (1 - test_set["occluder_mask"])
    lq = test_set["lq"]
    test_set.update(lq_noise_free=noise_free["lq"], lq_with_render=torch.lerp(lq, render, visible),
                    lq_with_face=torch.lerp(lq, test_set["hq"], visible), visible=visible)
    return test_set


def restoration_bounds(reconstructions: Mapping[str, torch.Tensor], batch_size: int = 64) -> Evaluation:
    """How much a restorer could gain on the blind test set: PSNR and SSIM of the LQ input and
    of the cheating reconstructions of :func:`bound_reconstructions`."""
    evaluation = Evaluation(metrics=("psnr", "ssim"))
    for name, key in BOUND_METHODS.items():
        results, count = score(lambda batch, key=key: (batch[key], None), reconstructions,
                               lpips=False, fid=False, batch_size=batch_size)
        evaluation.rows.append(Row("blind", name, results, count))
    evaluation.notes.append(f"visible face: {reconstructions['visible'].mean().item():.1%} of the pixels (rendered "
                            f"face not covered by an occluder)")
    return evaluation


@dataclass
class AFFBStatistics:
    """Channel-mean AFFB masks (the weight of F_lq) on occluder and skin pixels, per resolution."""

    occluder: dict[int, float]  # mean M over occluder pixels of all images
    skin: dict[int, float]  # mean M over visible face pixels not covered by an occluder
    background: dict[int, float]  # mean M where neither the face nor an occluder is (hair, backdrop)
    per_image_ratio: dict[int, torch.Tensor]  # occluder / skin mean per image with occluders
    mean_masks: dict[int, torch.Tensor]  # (N, 1, r, r) channel- and block-mean masks
    num_images: int
    occluder_l1: dict[str, float]  # mean |image - HQ| on occluder pixels: "output" and "i3d"
    sunglasses_l1: dict[str, float]  # the same on faces whose only occluder is a pair of sunglasses

    @property
    def ratio(self) -> dict[int, float]:
        return {r: self.occluder[r] / self.skin[r] for r in self.occluder}

    def summary(self) -> dict:
        """The pooled numbers, JSON-friendly (keys are resolutions as strings)."""
        def rounded(values):
            return {str(r): round(v, 4) for r, v in values.items()}

        return {"images": self.num_images, "ratio": rounded(self.ratio),
                "occluder_mean": rounded(self.occluder), "skin_mean": rounded(self.skin),
                "background_mean": rounded(self.background),
                **{f"occluder_l1_{name}": round(v, 4) for name, v in self.occluder_l1.items()},
                **{f"sunglasses_l1_{name}": round(v, 4) for name, v in self.sunglasses_l1.items()}}


@torch.no_grad()
def affb_statistics(module, test_set: Mapping[str, torch.Tensor], batch_size: int = 64) -> AFFBStatistics:
    """AFFB's mask M (F = F_3d + M (F_lq − F_3d), so M = 1 takes F_lq) averaged over channels and
    both blocks at every resolution ≥ 16, on occluder against skin pixels; and the mean L1 to
    the HQ image of the output and of I_3d on occluder pixels.

    Occluder and face masks are area-averaged to each resolution; a cell counts as occluder
    where an occluder covers more than half of it, as skin where the rendered face covers more
    than half and no occluder touches it, as background where neither touches it.
    """
    if module.hparams.fusion != "affb":
        raise ValueError(f"AFFB statistics need a model with AFFB; this one has fusion="
                         f"{module.hparams.fusion!r}")
    from sgpn.data.synthetic import OCCLUDERS

    masks: dict[int, list[torch.Tensor]] = {}
    errors: dict[str, list[torch.Tensor]] = {"output": [], "i3d": []}  # per image: summed |image - HQ|
    for start in range(0, len(test_set["lq"]), batch_size):
        restored = module.restore(test_set["lq"][start:start + batch_size])
        hq = test_set["hq"][start:start + batch_size]
        cover = test_set["occluder_mask"][start:start + batch_size].float()
        for name, image in (("output", restored.output), ("i3d", restored.d3d)):
            errors[name].append(((image - hq).abs() * cover).flatten(1).sum(1))
        for res in sorted({r for r, _ in restored.masks if r >= AFFB_MIN_RESOLUTION}):
            blocks = [m.mean(1, keepdim=True) for (r, _), m in restored.masks.items() if r == res]
            masks.setdefault(res, []).append(torch.stack(blocks).mean(0))
    mean_masks = {res: torch.cat(parts) for res, parts in masks.items()}
    occluder, skin, background, per_image = {}, {}, {}, {}
    for res, mask in mean_masks.items():
        cover = F.adaptive_avg_pool2d(test_set["occluder_mask"].float(), res)
        face = F.adaptive_avg_pool2d(test_set["face_mask"].float(), res)
        on_occluder, on_skin = cover > 0.5, (face > 0.5) & (cover == 0)
        occluder[res] = mask[on_occluder].mean().item()
        skin[res] = mask[on_skin].mean().item()
        background[res] = mask[(face == 0) & (cover == 0)].mean().item()
        has = on_occluder.flatten(1).any(1) & on_skin.flatten(1).any(1)
        sums = lambda where: (mask * where).flatten(1).sum(1) / where.flatten(1).sum(1).clamp(min=1)  # noqa: E731
        per_image[res] = (sums(on_occluder) / sums(on_skin))[has]
    pixels = 3 * test_set["occluder_mask"].float().flatten(1).sum(1)
    only_sunglasses = test_set["occluders"][:, OCCLUDERS.index("sunglasses")] & (test_set["occluders"].sum(1) == 1)

    def mean_l1(faces: torch.Tensor) -> dict[str, float]:
        return {name: (torch.cat(parts)[faces].sum() / pixels[faces].sum().clamp(min=1)).item()
                for name, parts in errors.items()}

    return AFFBStatistics(occluder, skin, background, per_image, mean_masks, len(test_set["lq"]),
                          mean_l1(torch.ones_like(only_sunglasses)), mean_l1(only_sunglasses))


#: Hand-set AFFB masks for :func:`mask_interventions`: each a function of the learned mask
#: ``(B, C, r, r)`` and the occluder cells at its resolution ``(B, 1, r, r)`` (bool).
MASK_INTERVENTIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "learned": lambda mask, occluder: mask,
    "M = 1 on occluders": lambda mask, occluder: torch.where(occluder, 1.0, mask),
    "M = 0 on occluders": lambda mask, occluder: torch.where(occluder, 0.0, mask),
    "M = 0.5 everywhere": lambda mask, occluder: torch.full_like(mask, 0.5),
    "M = 1 everywhere (F_lq only)": lambda mask, occluder: torch.ones_like(mask),
    "M = 0 everywhere (F_3d only)": lambda mask, occluder: torch.zeros_like(mask),
}


@torch.no_grad()
def mask_interventions(module, test_set: Mapping[str, torch.Tensor], batch_size: int = 64) -> dict[str, dict[str, float]]:
    """What AFFB's masks do, found by setting them by hand (:data:`MASK_INTERVENTIONS`) in every
    block: the mean L1 to the HQ face over occluder pixels (``occluder_l1``) and over the whole
    image (``l1``), each setting on the same faces. A channel-mean mask near 0.5 can hide masks
    that choose per channel; these numbers tell the two apart. Occluder cells as in
    :func:`affb_statistics` (more than half covered)."""
    from sgpn.generator import overridden_masks

    if module.hparams.fusion != "affb":
        raise ValueError(f"mask interventions need a model with AFFB; this one has fusion={module.hparams.fusion!r}")
    cover_all = test_set["occluder_mask"].float()
    if not cover_all.any():
        raise ValueError("the test set has no occluder pixels: draw it with occluder_prob > 0")
    results = {}
    for name, setting in MASK_INTERVENTIONS.items():
        occluder_error = image_error = 0.0
        for start in range(0, len(test_set["lq"]), batch_size):
            cover = cover_all[start:start + batch_size]

            def override(mask, cover=cover):
                return setting(mask, F.adaptive_avg_pool2d(cover, mask.shape[-1]) > 0.5)

            with overridden_masks(module.generator, override):
                output = module.restore(test_set["lq"][start:start + batch_size]).output
            error = (output - test_set["hq"][start:start + batch_size]).abs()
            occluder_error += (error * cover).sum().item()
            image_error += error.sum().item()
        results[name] = {"occluder_l1": occluder_error / (3 * cover_all.sum().item()),
                         "l1": image_error / test_set["hq"].numel()}
    return results


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------


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
    import yaml

    settings = yaml.safe_load(Path(config).read_text()) or {}
    data = (settings.get("data") or {}).get("init_args") or {}
    if data.get("source", "synthetic") != "synthetic":
        raise ValueError(f"{config}: its data source is a folder; evaluate on a folder with --pair LQ HQ")
    return {"size": data.get("size", 64), "num_images": data.get("test_length", 256),
            "occluder_prob": data.get("occluder_prob", 0.5),
            "options": {data.get("degradation", "blind"): data.get("degradation_kwargs") or {}}}


def evaluate_command(checkpoints: Iterable[str], tasks: Iterable[str] = TASKS, config: str | None = None,
                     pair: tuple[str, str] | None = None, num_images: int | None = None,
                     teacher: str | None = None, lpips: bool = True, fid: bool = True,
                     out: str | os.PathLike = "results", name: str = "evaluation", caption: str = "",
                     progress: bool = True) -> list[Path]:
    """``sgpn evaluate``: load checkpoints, build the test sets, score, write the tables."""
    from sgpn.checkpoints import load_regressor_weights, load_sgpn
    from sgpn.training import build_prior

    modules = {n: load_sgpn(p) for n, p in parse_checkpoints(checkpoints).items()}
    if not modules:
        raise ValueError("give at least one checkpoint (--ckpt NAME=PATH)")
    sizes = {n: m.size for n, m in modules.items()}
    first = next(iter(modules.values()))
    if len(set(sizes.values())) > 1:
        raise ValueError(f"checkpoints of different resolutions cannot share a table: {sizes}")
    if teacher is None:
        frozen_teacher = first.teacher
    else:
        frozen_teacher = build_prior(first.face_model, first.hparams.regressor, first.hparams.alignment)
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
