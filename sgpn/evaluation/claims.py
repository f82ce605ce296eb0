"""The paper's claims decided on a results table: ``holds``, ``fails`` or ``within noise``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from sgpn.evaluation.kit_models import TASK_MODELS
from sgpn.evaluation.metrics import MetricResult
from sgpn.evaluation.tables import METRIC_TITLES, TASK_TITLES, Evaluation

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
