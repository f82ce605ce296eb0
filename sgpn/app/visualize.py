"""Pictures for the notebooks and figures: image grids, landmarks and SH lighting bands."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from sgpn.evaluation.tables import METRIC_TITLES, TASK_TITLES
from sgpn.face3d import camera, coefficients
from sgpn.face3d.face_model import DEFAULT_LIGHT, FaceModel, FaceOutput, vertex_gram
from sgpn.face3d.renderer import Renderer

#: Millimetres per model unit (D3DFR's BFM is in units of 10 cm; the open model shares its frame).
MM_PER_UNIT = 100.0


def to_display(image: torch.Tensor, value_range: tuple[float, float] = (0.0, 1.0)):
    """``(3, H, W)`` or ``(H, W)`` tensor to an ``imshow``-ready array, clipped for display."""
    low, high = value_range
    image = ((image.detach().float().cpu() - low) / (high - low)).clamp(0, 1)
    return image.permute(1, 2, 0).numpy() if image.dim() == 3 else image.numpy()


def show_images(images, titles=None, ncols: int | None = None, size: float = 2.6,
                value_range=(0.0, 1.0), landmarks=None, cmap=None, suptitle=None):
    """A grid of images (a batch tensor or a list of ``(3, H, W)``/``(H, W)`` tensors)."""
    images = list(images)
    ncols = ncols or len(images)
    nrows = (len(images) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= len(images):
            continue
        ax.imshow(to_display(images[index], value_range), cmap=cmap)
        if landmarks is not None:
            points = landmarks[index].detach().cpu()
            ax.scatter(points[:, 0], points[:, 1], s=4, c="lime")
        if titles is not None:
            ax.set_title(titles[index], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


#: What each of D3DFR's nine SH basis functions is proportional to (camera space: x right, y up,
#: z towards the viewer). Bands 1, 3, 5 and 7 carry a minus sign in D3DFR's basis.
SH_BAND_NAMES = ("1 (constant)", "−y", "z", "−x", "xy", "−yz", "3z²−1", "−xz", "x²−y²")


def sh_band_images(model: FaceModel, renderer: Renderer, coeffs: torch.Tensor | None = None):
    """Render each of the nine SH basis functions, evaluated on the face's normals.

    Returns ``(9, H, W)`` signed irradiance images and the render mask ``(H, W)``: what a
    lighting vector with a single non-zero band would multiply the albedo by.
    """
    coeffs = torch.zeros(1, coefficients.NUM_COEFFS) if coeffs is None else coeffs
    with torch.no_grad():
        face = model(coeffs, renderer.image_size)
        basis = FaceModel.sh_basis(face.normals)  # (1, N, 9)
        bands = []
        for band in range(9):
            colors = basis[..., band : band + 1].expand(-1, -1, 3)
            bands.append(renderer(face._replace(colors=colors), model.faces).image[0, 0])
        mask = renderer(face, model.faces).mask[0, 0]
    return torch.stack(bands), mask


def render_faces(model: FaceModel, renderer: Renderer, coeffs: torch.Tensor) -> tuple[FaceOutput, object]:
    """Build and render a batch of coefficient vectors (no gradients)."""
    with torch.no_grad():
        face = model(coeffs, renderer.image_size)
        return face, renderer(face, model.faces)


def default_light_factor() -> float:
    """What zero lighting coefficients multiply the albedo by: 0.8 * a0 * c0."""
    return DEFAULT_LIGHT * float(FaceModel.sh_basis(torch.tensor([0.0, 0.0, 1.0]))[0])


#: The ablation chart's metrics: FID, KID and NME from zero; SSIM and PSNR zoomed (their
#: titles say so), since their differences are a few hundredths of their values.
ABLATION_METRICS = ("fid", "kid", "nme", "ssim_face", "psnr")


def ablation_chart(evaluation, methods: list[str], task: str = "blind", metrics: tuple[str, ...] = ABLATION_METRICS):
    """``metrics`` of ``methods`` (rows of a :class:`sgpn.evaluation.tables.Evaluation`) on one task,
    as bar charts with the spread of each value as an error bar (SSIM and PSNR zoomed)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.8 * len(metrics), 3))
    for ax, metric in zip(axes, metrics):
        results = [evaluation.result(task, m, metric) for m in methods]
        values = [r.value for r in results]
        errors = [r.spread or 0.0 for r in results]
        ax.bar(range(len(methods)), values, yerr=errors, capsize=3,
               color=["grey", *(f"C{i}" for i in range(len(methods) - 1))])
        ax.set_xticks(range(len(methods)), methods, rotation=20, fontsize=7, ha="right")
        zoomed = metric in ("ssim", "ssim_face", "psnr")
        if zoomed:
            low, high = min(values) - max(errors), max(values) + max(errors)
            ax.set_ylim(low - 0.2 * (high - low), high + 0.2 * (high - low))
        ax.set_title(f"{METRIC_TITLES[metric]}" + (" (axis not from 0)" if zoomed else ""), fontsize=9)
    fig.suptitle(TASK_TITLES.get(task, task), fontsize=9)
    fig.tight_layout()
    return fig


def show_rows(rows: dict[str, torch.Tensor], size: float = 1.5, titles=None):
    """One row of ``[0, 1]`` images per name, the name written left of the row; ``titles``
    (one per column) go above the first row."""
    count = max(len(images) for images in rows.values())
    fig, axes = plt.subplots(len(rows), count, figsize=(size * count + 1.2, size * len(rows)), squeeze=False)
    for (name, images), line in zip(rows.items(), axes):
        for index, ax in enumerate(line):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
            if index < len(images):
                ax.imshow(to_display(images[index]))
        line[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    for ax, title in zip(axes[0], titles or []):
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def difference_maps(images: torch.Tensor, reference: torch.Tensor, gain: float = 4.0, cmap: str = "magma"):
    """``|images - reference|`` (mean over colour) times ``gain``, colour-mapped on one fixed scale
    (black: identical) as ``(..., 3, H, W)`` images for :func:`show_rows`: a warp of a few pixels
    or a slight change of colour, invisible side by side at 64 px, shows where it acted."""
    difference = ((images - reference).abs().mean(-3) * gain).clamp(0, 1)
    return torch.from_numpy(plt.get_cmap(cmap)(difference.detach().cpu().numpy())[..., :3]).float().movedim(-1, -3)


@torch.no_grad()
def vertex_maps(model: FaceModel, values: dict[str, torch.Tensor], unit: str = "mm",
                scale: float = MM_PER_UNIT, size: int = 160, cmap: str = "magma"):
    """A per-vertex distance (``(N,)`` each, model units) painted on the frontal mean face, one
    panel per name, with one colour bar in ``unit`` (``scale`` of them per model unit)."""
    renderer = Renderer(size)
    face = model(torch.zeros(1, coefficients.NUM_COEFFS), size)
    limit = max(v.max().item() for v in values.values()) * scale
    colour_map = plt.get_cmap(cmap)
    fig, axes = plt.subplots(1, len(values), figsize=(2.3 * len(values) + 0.8, 2.6), squeeze=False)
    for ax, (name, value) in zip(axes[0], values.items()):
        colours = torch.from_numpy(colour_map((value * scale / limit).clamp(0, 1).numpy())[..., :3]).float()
        out = renderer(face._replace(colors=colours[None]), model.faces)
        ax.imshow(to_display(out.image[0] * out.mask[0] + (1 - out.mask[0])))
        ax.set_title(f"{name}\nmean {value.mean().item() * scale:.2f} {unit}", fontsize=9)
        ax.axis("off")
    mappable = plt.cm.ScalarMappable(cmap=colour_map, norm=plt.Normalize(0, limit))
    fig.colorbar(mappable, ax=axes[0].tolist(), fraction=0.03, label=f"vertex error ({unit})")
    return fig


def grouped_bars(values: dict[str, dict[str, float]], labels: dict[str, str], xlabel: str,
                 xlim: tuple[float, float] | None = None):
    """Horizontal bars: one group per key of the inner dicts (titled by ``labels``), one bar
    colour per outer key (the legend). A bar beyond ``xlim`` stops at the edge, hatched, with
    its true value written there, so a clipped bar never reads as a short one."""
    groups = list(labels)
    low, high = xlim or (-np.inf, np.inf)
    fig, ax = plt.subplots(figsize=(7, 0.42 * len(groups) * max(1, len(values) / 2) + 1))
    height = 0.8 / len(values)
    for index, (name, row) in enumerate(values.items()):
        positions = np.arange(len(groups)) + index * height
        data = np.array([row.get(g, float("nan")) for g in groups])
        bars = ax.barh(positions, data.clip(low, high), height, label=name, color=f"C{index}")
        for bar, y, value in zip(bars, positions, data):
            if value < low or value > high:
                left = value < low
                bar.set_hatch("///")
                shown = f"{value:.2f}".replace("-", "−")
                ax.text(low if left else high, y, f"◀ {shown}" if left else f"{shown} ▶",
                        ha="left" if left else "right", va="center", fontsize=8,
                        bbox={"fc": "white", "ec": "none", "pad": 0.5})
    ax.set_yticks(np.arange(len(groups)) + height * (len(values) - 1) / 2, [labels[g] for g in groups])
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(xlabel)
    if xlim:
        ax.set_xlim(*xlim)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def pixel_size_mm(image_size: int) -> float:
    """How many millimetres one pixel of a ``image_size`` crop spans at the face's distance."""
    return camera.pixel_span(image_size) * MM_PER_UNIT


def basis_sizes_chart(model: FaceModel, image_size: int = 64):
    """How much one unit of each identity, expression and texture component changes the face:
    the RMS over vertices of the move (mm) or of the albedo change, on a log scale, with the
    size of one pixel of an ``image_size`` crop for the shape bases."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    for part, basis in (("identity", model.id_basis), ("expression", model.exp_basis)):
        axes[0].plot(range(1, basis.shape[1] + 1), vertex_gram(basis).diag().sqrt() * MM_PER_UNIT, ".-",
                     label=part, ms=3)
    axes[0].axhline(pixel_size_mm(image_size), color="grey", ls="--", lw=1)
    axes[0].text(basis.shape[1], pixel_size_mm(image_size) * 0.8, f"one pixel at {image_size} px",
                 ha="right", va="top", fontsize=8, color="grey")
    axes[0].set_ylabel("RMS vertex move (mm)")
    axes[1].plot(range(1, model.tex_basis.shape[1] + 1), vertex_gram(model.tex_basis).diag().sqrt(), ".-",
                 color="C2", ms=3, label="texture")
    axes[1].axhline(1 / 255, color="grey", ls="--", lw=1)
    axes[1].text(model.tex_basis.shape[1], 1.15 / 255, "one 8-bit level", ha="right", va="bottom",
                 fontsize=8, color="grey")
    axes[1].set_ylabel("RMS albedo change (0..1)")
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xlabel("component (one unit of the coefficient)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


@torch.no_grad()
def prior_renders(prior, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A shape prior's I_3d for ``[0, 1]`` face crops, and I_3d pasted over each crop where it
    covers the face (both ``[0, 1]``)."""
    prior.eval()
    out = prior(images * 2 - 1)
    render = ((out.image + 1) / 2).clamp(0, 1)
    return render, torch.where(out.mask > 0.5, render, images)


def component_r2_chart(moves_px: dict[str, torch.Tensor], r2: dict[str, dict[str, torch.Tensor]]):
    """Each leading identity and expression component's R² (one colour per regressor, ``{label:
    {"id": (n,), "exp": (n,)}}``) against how far one standard deviation of it moves the face
    (``sgpn.evaluation.shape_accuracy.component_moves_px``), numbered on the points."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for colour, (label, values) in enumerate(r2.items()):
        for part, marker in (("id", "o"), ("exp", "s")):
            x, y = moves_px[part], values[part]
            ax.scatter(x, y, marker=marker, color=f"C{colour}", s=22,
                       label=f"{label}, {'identity' if part == 'id' else 'expression'}")
            for number, (xi, yi) in enumerate(zip(x.tolist(), y.tolist()), 1):
                ax.annotate(str(number), (xi, yi), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xticks([0.05, 0.1, 0.2, 0.5, 1.0], ["0.05", "0.1", "0.2", "0.5", "1"])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("RMS vertex move of one standard deviation (pixels)")
    ax.set_ylabel("R² on the held-out faces")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def readout_chart(readouts: dict[str, dict[float, dict]], regressors: dict[str, tuple[float, float]]):
    """Vertex error (relative to the mean face's) against landmark NME: a line per set of linear
    landmark read-outs (``{label: {noise_px: sgpn.evaluation.shape_accuracy.landmark_readout}}``), a point
    per noise level, and a square per regressor (``{name: (nme, vertex error ratio)}``)."""
    shades = ("grey", "silver", "black")
    if len(readouts) > len(shades):
        raise ValueError(f"the chart tells {len(shades)} read-out lines apart, got {len(readouts)}")
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for shade, (label, line) in zip(shades, readouts.items()):
        noise = sorted(line)
        ax.plot([line[n]["nme"] for n in noise], [line[n]["vertex_error_ratio"] for n in noise], "o-",
                color=shade, label=label)
        for n in noise:
            ax.annotate(f"{n:g} px", (line[n]["nme"], line[n]["vertex_error_ratio"]), fontsize=7,
                        xytext=(3, -10), textcoords="offset points")
    for index, (name, (nme, ratio)) in enumerate(regressors.items()):
        ax.plot(nme, ratio, "s", color=f"C{index}", label=name)
    ax.axhline(1, color="black", lw=0.8, ls=":")
    ax.set_xlabel("landmark NME")
    ax.set_ylabel("vertex error / mean face's")
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def show_masks_shared(rows: dict[str, list[tuple[str, torch.Tensor]]], mask_label: str, size: float = 1.4):
    """Rows of titled panels, the row's name at its left: ``(3, H, W)`` images as they are, and
    every ``(H, W)`` panel a mask drawn on one colour scale shared by all of them (the lowest to
    the highest mask value shown), read off one colour bar, so masks compare across panels,
    rows and models."""
    masks = [image for panels in rows.values() for _, image in panels if image.dim() == 2]
    if not masks:
        raise ValueError("no (H, W) mask panels to draw")
    low = min(m.min().item() for m in masks)
    high = max(max(m.max().item() for m in masks), low + 1e-6)
    count = max(len(panels) for panels in rows.values())
    fig, axes = plt.subplots(len(rows), count, figsize=(size * count + 2.2, size * len(rows) + 0.6), squeeze=False,
                             layout="constrained")  # leaves room for the colour bar and a title
    for (name, panels), line in zip(rows.items(), axes):
        for ax in line:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
        for ax, (title, image) in zip(line, panels):
            if image.dim() == 2:
                shown = ax.imshow(image.detach().float().cpu().numpy(), cmap="viridis", vmin=low, vmax=high)
            else:
                ax.imshow(to_display(image))
            ax.set_title(title, fontsize=8)
        line[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.colorbar(shown, ax=axes, fraction=0.02, pad=0.01, label=mask_label)
    return fig


def preview_figure(preview: dict, size: float = 1.6):
    """What :class:`~sgpn.training.callbacks.ImageGridLogger` writes at each validation, legibly:
    an SGPN module's ``preview`` (LQ, I_3d, output and GT, then each AFFB mask on one colour
    scale), one face per column."""
    count = len(preview["rows"]["LQ"])
    rows = {name: [(f"face {i}" if name == "LQ" else "", images[i]) for i in range(count)]
            for name, images in preview["rows"].items()}
    rows |= {name: [("", masks[i, 0]) for i in range(count)] for name, masks in preview["masks"].items()}
    return show_masks_shared(rows, "M (channel mean): 1 takes F_lq, 0 takes F_3d", size)


@torch.no_grad()
def affb_mask_comparison(models: dict, test_set: dict, faces: dict[str, int], resolutions=(32, 64)):
    """For each named face (``{"sunglasses": index, ...}``) and each model: LQ, I_3d, the
    channel- and block-mean AFFB mask at ``resolutions`` (one shared colour scale), the output,
    GT and the occluder, so the masks of different models compare panel for panel. Models whose
    I_3d needs the true coefficients (the prior ladder's) get them from the test set."""
    index = torch.tensor(list(faces.values()))
    rows = {}
    for name, module in models.items():
        truth = test_set["coeffs"][index] if getattr(module, "prior_weight", 0) else None
        restored = module.restore(test_set["lq"][index], truth)
        for j, kind in enumerate(faces):
            means = {res: torch.stack([m[j].mean(0) for (r, _), m in restored.masks.items() if r == res]).mean(0)
                     for res in resolutions}
            rows[f"{kind}\n{name}"] = [("LQ", test_set["lq"][index[j]]), ("I_3d", restored.i3d[j]),
                                       *[(f"M {res} px", means[res]) for res in resolutions],
                                       ("output", restored.output[j]), ("GT", test_set["hq"][index[j]]),
                                       ("occluder", test_set["occluder_mask"][index[j]].float().expand(3, -1, -1))]
    ordered = {key: rows[key] for kind in faces for key in rows if key.startswith(f"{kind}\n")}
    return show_masks_shared(ordered, "M (channel and block mean): 1 takes F_lq, 0 takes F_3d")


def ladder_chart(rungs: dict[str, dict], curve: list[dict], target: float):
    """Left: each rung's occluder/skin ratio (± 2 standard errors) at 32 and 64 px against its
    I_3d's PSNR on skin. Right: the oracle's ratio against training iterations, with the other
    rungs at their iteration count. The dashed line is the target."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for res, marker in (("32", "s"), ("64", "o")):
        x = [rung["i3d_psnr_skin"] for rung in rungs.values()]
        y = [rung["ratio"][res] for rung in rungs.values()]
        left.errorbar(x, y, yerr=[2 * rung["ratio_se"][res] for rung in rungs.values()], marker=marker, capsize=3,
                      label=f"{res} px")
        if res == "64":
            for name, xi, yi in zip(rungs, x, y):
                left.annotate(name, (xi, yi), textcoords="offset points", xytext=(6, -12), fontsize=9)
        iterations = [row["iterations"] for row in curve]
        ratios = np.array([row["ratio"][res] for row in curve])
        spread = 2 * np.array([row["ratio_se"][res] for row in curve])
        line, = right.plot(iterations, ratios, marker=marker, ms=3, label=f"oracle, {res} px")
        right.fill_between(iterations, ratios - spread, ratios + spread, color=line.get_color(), alpha=0.2)
    for name in rungs:
        if name != "oracle":
            at = (rungs[name]["iterations"], rungs[name]["ratio"]["64"])
            right.scatter(*at, marker="x", color="k", zorder=3)
            right.annotate(f"{name}, 64 px", at, textcoords="offset points",
                           xytext=(5, -4), fontsize=8)
    for ax in (left, right):
        ax.axhline(target, color="k", ls="--", lw=1)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_ylabel("occluder/skin ratio of M")
        ax.legend(fontsize=8, loc="upper left")
    left.set_xlabel("I_3d's PSNR on skin (dB): the prior's quality")
    left.set_title(f"the prior ladder after {rungs['oracle']['iterations']:,} iterations (± 2 SE)", fontsize=10)
    right.set_xlabel("training iterations")
    right.set_title("the oracle trained on (± 2 SE)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_training_log(path):
    """The curves of an SGPN run's CSV log (Lightning's ``metrics.csv``) against iterations (the
    logger's steps, not Lightning's, which count each optimiser): every weighted term of the
    generator's loss, the discriminator's, and the validation PSNR and SSIM of the output
    against those of the LQ input."""
    log = np.genfromtxt(path, delimiter=",", names=True)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    curves = {0: (("trainl1", "L1"), ("trainfeature_matching", "feature matching"), ("trainperceptual", "VGG-16"),
                  ("trainadv", "L_adv"), ("train3dlm", "λ_lm L_3dlm"), ("trainmesh", "λ_vt L_mesh")),
              1: (("traind_loss", "D loss"), ("trainr1", "R1"))}
    for panel, terms in curves.items():
        for key, label in terms:
            if key in log.dtype.names:
                keep = ~np.isnan(log[key])
                axes[panel].plot(log["step"][keep], log[key][keep], label=label, lw=1)
    axes[0].set_yscale("log")
    axes[0].set_title("generator loss terms")
    axes[1].set_title("discriminator")
    val = ~np.isnan(log["valpsnr"])
    for ax, metric, unit in ((axes[2], "psnr", " (dB)"), (axes[3], "ssim", "")):
        ax.plot(log["step"][val], log[f"val{metric}"][val], "o-", label="output")
        ax.plot(log["step"][val], log[f"val{metric}_lq"][val], "--", label="LQ input")
        ax.set_title(f"validation {metric.upper()}{unit}")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fit_loss_chart(losses: dict[str, list[float]], coarse_steps: int):
    """The fit's mean loss per Adam step for each start, with the end of the coarse phase."""
    fig, ax = plt.subplots(figsize=(5.5, 2.8), layout="constrained")
    for label, values in losses.items():
        ax.plot(range(1, len(values) + 1), values, label=label)
    ax.axvline(coarse_steps + 0.5, color="grey", ls=":", lw=1)
    ax.text(coarse_steps + 1, ax.get_ylim()[0], "shape and texture free", va="bottom", fontsize=8, color="grey")
    ax.set(xlabel="Adam step", ylabel="mean loss per face", yscale="log")
    ax.legend(fontsize=8)
    return fig
