"""Results tables: rows of metric results by task and method, as markdown and CSV."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from sgpn.evaluation.metrics import MetricResult

#: Tasks of the paper, as degradation names (see :func:`sgpn.data.degradations.build_degradation`).
TASKS = ("blind", "sr4", "sr8", "sr16", "inpaint")
TASK_TITLES = {"blind": "blind restoration", "sr4": "SR ×4", "sr8": "SR ×8", "sr16": "SR ×16",
               "inpaint": "inpainting", "given": "given LQ", "real": "real LQ (unpaired)", "retouch": "retouching reversal"}
#: Table headings of the metrics (arrows: which way is better).
METRIC_TITLES = {"psnr": "PSNR ↑", "ssim": "SSIM ↑", "ssim_face": "SSIM face ↑", "lpips": "LPIPS ↓",
                 "fid": "FID ↓", "kid": "KID ↓", "nme": "NME ↓", "vertex_error": "vertex error ↓",
                 "hole_l1": "hole L1 ↓", "id_error": "identity error ↓", "vgg": "VGG similarity ↑",
                 "clip": "CLIP similarity ↑"}
#: The columns of a restoration table (the rest belong to retouching reversal's).
RESTORATION_METRICS = ("psnr", "ssim", "ssim_face", "lpips", "fid", "kid", "nme", "vertex_error", "hole_l1")


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
        """One cell of the table as a :class:`~sgpn.evaluation.metrics.MetricResult` (``None`` if absent)."""
        for row in self.rows:
            if row.task == task and row.method == method:
                return row.results.get(metric)
        raise KeyError(f"no row for task {task!r} and method {method!r}")

    def value(self, task: str, method: str, metric: str) -> float:
        """One number of the table (``nan`` when the metric is unavailable)."""
        result = self.result(task, method, metric)
        return math.nan if result is None or result.value is None else result.value

    def without_empty_columns(self) -> Evaluation:
        """The table without the metrics no row has a number for (LPIPS in a CSV written where
        its weights were missing): a column of dashes tells a reader nothing."""
        metrics = tuple(m for m in self.metrics if any(row.results.get(m) is not None
                                                       and row.results[m].value is not None for row in self.rows))
        return Evaluation(self.rows, self.notes, metrics)


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
