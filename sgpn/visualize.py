"""Pictures for the notebooks and figures: image grids, landmarks and SH lighting bands."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from sgpn import coefficients
from sgpn.face_model import DEFAULT_LIGHT, FaceModel, FaceOutput
from sgpn.renderer import Renderer


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


SH_BAND_NAMES = ("1 (constant)", "y", "z", "x", "xy", "yz", "3z²−1", "xz", "x²−y²")


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


def ablation_chart(evaluation, methods: list[str], task: str = "blind"):
    """PSNR, SSIM and landmark NME of ``methods`` (rows of a :class:`sgpn.evaluation.Evaluation`)
    on one task, as three bar charts."""
    from sgpn.evaluation import METRIC_TITLES, TASK_TITLES

    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    for ax, metric in zip(axes, ("psnr", "ssim", "nme")):
        values = [evaluation.value(task, m, metric) for m in methods]
        ax.bar(range(len(methods)), values, color=["grey", *(f"C{i}" for i in range(len(methods) - 1))])
        ax.set_xticks(range(len(methods)), methods, rotation=20, fontsize=7, ha="right")
        ax.set_title(f"{TASK_TITLES.get(task, task)}: {METRIC_TITLES[metric]}")
        ax.set_ylim(min(values) * 0.9 if metric != "nme" else 0, max(values) * 1.02)
    fig.tight_layout()
    return fig
