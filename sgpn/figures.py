"""Figures the kit regenerates headless (``sgpn figures`` / ``make figures``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from sgpn.face_model import load_face_model  # noqa: E402
from sgpn.renderer import Renderer  # noqa: E402
from sgpn.visualize import render_faces, show_images  # noqa: E402


def faces_overview(out_dir: Path) -> Path:
    """The mean face and random faces of the default face model (the README picture)."""
    model = load_face_model()
    renderer = Renderer(224)
    coeffs = model.random_coefficients(7, generator=torch.Generator().manual_seed(3))
    coeffs = torch.cat([torch.zeros(1, coeffs.shape[1]), coeffs])
    _, rendered = render_faces(model, renderer, coeffs)
    titles = ["mean face"] + [f"random face {i}" for i in range(1, 8)]
    fig = show_images(rendered.image, titles=titles, ncols=8, size=2.0)
    path = out_dir / "faces_overview.png"
    fig.savefig(path, dpi=90)
    return path


FIGURES: dict[str, Callable[[Path], Path]] = {
    "faces_overview": faces_overview,
}


def make_figures(out_dir: str | Path = "figures", names: list[str] | None = None) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [FIGURES[name](out_dir) for name in (names or FIGURES)]
