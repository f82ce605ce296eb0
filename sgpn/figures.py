"""Figures the kit regenerates headless (``sgpn figures`` / ``make figures``).

Every figure is drawn from real tensors: the kit's face model, its synthetic held-out faces,
and the kit's own checkpoints in ``kit_checkpoints/`` (``make checkpoints`` and ``make
ablation`` rebuild them). Seeds are fixed, so a second run changes nothing beyond pixel noise.
``figures/README.md`` says which paper figure each one corresponds to.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Callable

import matplotlib
import matplotlib.pyplot as plt
import torch

from sgpn.app.visualize import (
    ablation_chart,
    affb_mask_comparison,
    ladder_chart,
    render_faces,
    show_images,
    show_rows,
)
from sgpn.checkpoints import load, load_teacher
from sgpn.data.degradations import describe
from sgpn.evaluation.affb import AFFB_RATIO_TARGET, affb_statistics, ladder_rungs, single_occluder_faces
from sgpn.evaluation.kit_models import LADDER, TASK_MODELS, VARIANTS, load_kit
from sgpn.evaluation.scoring import TASK_IMAGES, ablation_evaluation
from sgpn.evaluation.shape_accuracy import shape_from_lq
from sgpn.evaluation.tables import METRIC_TITLES, TASKS
from sgpn.evaluation.test_sets import degraded_test_set, synthetic_faces
from sgpn.face3d.face_model import load_face_model
from sgpn.face3d.renderer import Renderer
from sgpn.paths import KIT_CHECKPOINTS, KIT_ROOT
from sgpn.retouch.evaluation import FRR_ROWS, kit_frr_evaluation

#: Held-out faces used by the figures (the evaluation tables use the full test set).
NUM_IMAGES = 256
#: The oracle's occluder/skin ratio against iterations, measured by ``make ladder``.
LADDER_CURVE = KIT_ROOT / "figures" / "affb_ladder_curve.json"
#: Faces of the held-out set shown in the picture grids (with varied occluders).
SHOWN = (0, 1, 2, 3, 5, 6)


def _save(fig, path: Path) -> Path:
    metadata = {"Date": None} if path.suffix == ".svg" else {}
    fig.savefig(path, dpi=110, metadata=metadata)
    plt.close(fig)
    return path


@lru_cache(maxsize=4)
def _faces(num_images: int, occluder_prob: float = 0.5):
    return synthetic_faces(64, num_images, occluder_prob)


@lru_cache(maxsize=16)
def _test_set(num_images: int, task: str, occluder_prob: float = 0.5) -> dict:
    """The held-out faces degraded for ``task``, drawn once for all figures (read-only)."""
    return degraded_test_set(_faces(num_images, occluder_prob), task)


@lru_cache(maxsize=len(VARIANTS) + len(TASK_MODELS))
def _model(name: str = "full SGPN"):
    return load_kit(name)


def faces_overview(out_dir: Path, num_images: int = NUM_IMAGES) -> list[Path]:
    """The mean face and random faces of the default face model (the README picture)."""
    model = load_face_model()
    renderer = Renderer(224)
    coeffs = model.random_coefficients(7, generator=torch.Generator().manual_seed(3))
    coeffs = torch.cat([torch.zeros(1, coeffs.shape[1]), coeffs])
    _, rendered = render_faces(model, renderer, coeffs)
    titles = ["mean face"] + [f"random face {i}" for i in range(1, 8)]
    fig = show_images(rendered.image, titles=titles, ncols=8, size=2.0)
    return [_save(fig, out_dir / "faces_overview.png")]


def pipeline(out_dir: Path, num_images: int = NUM_IMAGES) -> list[Path]:
    """SGPN's pipeline on one held-out face with sunglasses, every panel a real tensor."""
    full = _model()
    test_set = _test_set(num_images, "blind", 1.0)
    index = next(i for i in range(num_images) if test_set["occluder_mask"][i].mean() > 0.05)
    lq, hq = test_set["lq"][index:index + 1], test_set["hq"][index:index + 1]
    restored = full.restore(lq)
    masks = {res: m.mean(1)[0] for (res, block), m in sorted(restored.masks.items()) if block == 1 and res >= 16}
    fig = plt.figure(figsize=(14, 3.4))
    grid = fig.add_gridspec(2, 4 + len(masks), height_ratios=[1, 0.25])
    panels = [(lq[0], "I_lq (blind LQ)"), (restored.i3d[0], "I_3d: regressor → 257\ncoeffs → mesh → render")]
    panels += [(m, f"AFFB mask M, {r} px\n(1 = take F_lq)") for r, m in masks.items()]
    panels += [(restored.output[0], "I: SGPN output"), (hq[0], "I_hq (ground truth)")]
    for column, (image, title) in enumerate(panels):
        ax = fig.add_subplot(grid[0, column])
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy() if image.dim() == 3 else image.numpy(),
                  cmap="viridis", vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    text = fig.add_subplot(grid[1, :])
    text.axis("off")
    text.text(0.5, 0.5, "I_lq → shape restoration module → I_3d and its 257 coefficients;   shared encoder on "
              "I_lq and I_3d → F_lq, F_3d and two codes;   mapping(codes, coefficients) → w\nStyleGAN2 decoder driven by w: at every "
              "resolution AFFB mixes F = M·F_lq + (1 − M)·F_3d  →  I", ha="center", va="center", fontsize=9)
    fig.suptitle(f"SGPN pipeline on held-out face {index} (kit's tiny model, 64 px)", fontsize=11)
    return [_save(fig, out_dir / "pipeline.png")]


def degradations(out_dir: Path, num_images: int = NUM_IMAGES) -> list[Path]:
    """Each task's input for the same faces, with the drawn parameters as captions."""
    shown = list(SHOWN[:4])
    rows = {"HQ": _test_set(num_images, "blind")["hq"]}
    captions = {"HQ": [""] * len(shown)}
    for task in TASKS:
        test_set = _test_set(num_images, task)
        rows[task] = test_set["lq"]
        captions[task] = [describe(test_set["degradation"][i]) for i in shown]
    images = [rows[task][i] for i in shown for task in rows]
    titles = [f"{task}\n{captions[task][k]}" for k in range(len(shown)) for task in rows]
    fig = show_images(images, titles=titles, ncols=len(rows), size=2.1)
    for ax in fig.axes:
        ax.title.set_fontsize(6.5)
    return [_save(fig, out_dir / "degradations.png")]


def restoration(out_dir: Path, num_images: int = NUM_IMAGES) -> list[Path]:
    """LQ / I_3d / output / GT for blind restoration and SR ×4, ×8, ×16 (full tiny SGPN)."""
    full = _model()
    shown = list(SHOWN[:4])
    images, titles = [], []
    for task in ("blind", "sr4", "sr8", "sr16"):
        test_set = _test_set(num_images, task)
        lq = test_set["lq"][shown]
        restored = full.restore(lq)
        for i in range(len(shown)):
            for name, image in (("LQ", lq[i]), ("I_3d", restored.i3d[i]), ("output", restored.output[i]),
                                ("GT", test_set["hq"][shown[i]])):
                images.append(image)
                titles.append(f"{task} {name}")
    fig = show_images(images, titles=titles, ncols=4 * len(shown), size=1.2)
    for ax in fig.axes:
        ax.title.set_fontsize(6)
    return [_save(fig, out_dir / "restoration.png")]


def inpainting(out_dir: Path, num_images: int = NUM_IMAGES) -> list[Path]:
    """Masked input, the blind-restoration model's output, the inpainting model's output, GT."""
    test_set, shown = _test_set(num_images, "inpaint"), list(SHOWN[:4])
    lq = test_set["lq"][shown]
    rows = {"masked input": lq, "trained for blind restoration": _model().restore(lq).output,
            "trained for inpainting": _model("SGPN for inpainting").restore(lq).output,
            "GT": test_set["hq"][shown]}
    return [_save(show_rows(rows, size=1.4), out_dir / "inpainting.png")]


def affb_masks(out_dir: Path, num_images: int = NUM_IMAGES) -> list[Path]:
    """The kit model's and the oracle's channel-mean AFFB masks on one shared colour scale, on
    faces wearing only sunglasses, a hand or a hat, and the kit model's occluder/skin ratio."""
    test_set = _test_set(num_images, "blind", 1.0)
    models = {"kit model": _model(), "oracle": load(KIT_CHECKPOINTS / LADDER["oracle"])}
    fig = affb_mask_comparison(models, test_set, single_occluder_faces(test_set, required=False))
    stats = affb_statistics(models["kit model"], test_set)
    oracle = affb_statistics(models["oracle"], test_set)
    ratios = "; ".join(f"{name}: " + ", ".join(f"{r} px {v:.2f}" for r, v in s.ratio.items())
                       for name, s in (("kit model", stats), ("oracle", oracle)))
    fig.suptitle(f"Occluder/skin ratio of the mean mask over {stats.num_images} occluded faces: {ratios}", fontsize=9)
    paths = [_save(fig, out_dir / "affb_masks.png")]
    path = out_dir / "affb_ratios.json"
    path.write_text(json.dumps(stats.summary(), indent=1) + "\n")
    return paths + [path]


def affb_ladder(out_dir: Path, num_images: int = NUM_IMAGES) -> list[Path]:
    """The prior ladder: the occluder/skin ratio of C, mix and oracle against their I_3d's PSNR
    on skin, and the oracle's ratio against its training iterations (the curve ``make ladder``
    measured on its run's checkpoints, which are not shipped)."""
    if not LADDER_CURVE.is_file():
        raise FileNotFoundError(f"{LADDER_CURVE} is missing: make ladder measures it")
    curve = json.loads(LADDER_CURVE.read_text())["rows"]
    rungs = ladder_rungs(_test_set(num_images, "blind", 1.0))
    fig = ladder_chart(rungs, curve, target=AFFB_RATIO_TARGET)
    path = out_dir / "affb_ladder.json"
    path.write_text(json.dumps({"images": num_images, "rungs": rungs, "oracle_curve": curve}, indent=1) + "\n")
    return [_save(fig, out_dir / "affb_ladder.png"), path]


def shape_from_lq_figure(out_dir: Path, num_images: int = NUM_IMAGES) -> list[Path]:
    """Teacher (HQ-trained) against the separately fine-tuned LQ regressor and the shape
    restoration module trained jointly with SGPN, on LQ faces, against ground truth, at each
    degradation level: a table and a chart."""
    full = _model()
    priors = {"teacher (trained on HQ)": load_teacher(full),
              "LQ regressor (fine-tuned against the teacher)": load(KIT_CHECKPOINTS / "regressor_lq_tiny.ckpt"),
              "jointly trained (full SGPN)": full.shape_prior}
    evaluation = shape_from_lq(priors, _faces(num_images))
    paths = evaluation.write(out_dir, "shape_from_lq", caption="Shape from LQ: errors against the "
                             "ground-truth synthetic faces (NME of the projected 68 landmarks; mean "
                             "vertex distance of the unposed shape).")
    levels = list(dict.fromkeys(row.task for row in evaluation.rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    width = 0.8 / len(priors)
    for ax, metric in zip(axes, ("vertex_error", "nme")):
        for k, name in enumerate(priors):
            values = [evaluation.value(level, name, metric) for level in levels]
            ax.bar([x + k * width for x in range(len(levels))], values, width, label=name)
        ax.set_xticks([x + width * (len(priors) - 1) / 2 for x in range(len(levels))], levels, fontsize=7)
        ax.set_title(METRIC_TITLES[metric])
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return paths + [_save(fig, out_dir / "shape_from_lq.svg")]


def ablation(out_dir: Path, num_images: int = NUM_IMAGES) -> list[Path]:
    """The evaluation table over every task for the full model and variants A, B, C (the rows
    of ``sgpn bench ablation``: twice ``num_images`` faces for blind restoration, 512 by
    default, and 128 of them for the other tasks), and a chart of the blind-restoration rows."""
    blind, others = 2 * num_images, num_images * TASK_IMAGES // NUM_IMAGES
    evaluation = ablation_evaluation(blind, others)
    evaluation.notes.append("The full model and variants A, B, C are the kit's tiny 64 px SGPN trained "
                            "for blind restoration with the same seed, data and iterations (`make "
                            "checkpoints`, `make ablation`); the SR and inpainting rows test them on inputs "
                            "they were not trained for. SGPN for inpainting is the full model trained the "
                            "same way on inpainting holes instead (`make tasks`). ± is the standard error "
                            "over images (KID: the standard deviation over random subsets of 100 faces).")
    paths = evaluation.write(out_dir, "ablation", caption=f"Ablation on synthetic held-out faces: {blind} for "
                             f"blind restoration, the first {others} of them for SR and inpainting.")
    fig = ablation_chart(evaluation, ["LQ input", *VARIANTS])
    return paths + [_save(fig, out_dir / "ablation.svg")]


def retouching_reversal(out_dir: Path, num_images: int = NUM_IMAGES) -> list[Path]:
    """Face retouching reversal (FRRffusion's rows, :mod:`sgpn.retouch.evaluation`) on
    ``num_images`` held-out synthetic pairs: the table, and the rows' faces for a few of them."""
    evaluation, pairs, outputs, seconds = kit_frr_evaluation(num_images)
    evaluation.notes.append(f"FMAR samples 20 DDIM steps from seeded noise ({seconds:.2f} s a face with HFDG on "
                            "2 CPU cores). The identity error is the kit's teacher's identity-only mesh of the "
                            "output against that of the raw face, in the face model's units. ± is the standard "
                            "error over faces (KID: the standard deviation over random subsets of 100 faces).")
    paths = evaluation.write(out_dir, "frr", caption=f"Retouching reversal on {num_images} held-out synthetic "
                             "pairs (64 px; FMAR at 32 px).")
    shown = list(SHOWN)
    rows = {FRR_ROWS[key]: faces[shown] for key, faces in outputs.items()} | {"raw": pairs["hq"][shown]}
    return paths + [_save(show_rows(rows, size=1.3), out_dir / "frr.png")]


FIGURES: dict[str, Callable[..., list[Path]]] = {
    "faces_overview": faces_overview,
    "pipeline": pipeline,
    "degradations": degradations,
    "shape_from_lq": shape_from_lq_figure,
    "restoration": restoration,
    "affb_masks": affb_masks,
    "affb_ladder": affb_ladder,
    "ablation": ablation,
    "inpainting": inpainting,
    "frr": retouching_reversal,
}


def make_figures(out_dir: str | Path = "figures", names: list[str] | None = None,
                 num_images: int = NUM_IMAGES) -> list[Path]:
    """Draw the named figures (default: all) into ``out_dir``; returns the written files."""
    unknown = sorted(set(names or ()) - set(FIGURES))
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; choose from {', '.join(FIGURES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    with matplotlib.rc_context({"svg.hashsalt": "sgpn"}):  # stable ids in SVG files
        return [path for name in (names or FIGURES) for path in FIGURES[name](out_dir, num_images)]
