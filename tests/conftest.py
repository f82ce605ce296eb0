"""Shared fixtures: small meshes, a BFM-format .mat and portrait photos written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def grid_mesh(rows: int = 12, cols: int = 10, size: float = 1.6, bulge: float = 0.3):
    """A bumped rectangular grid facing +z: vertices (N, 3), counter-clockwise faces (F, 3)."""
    ys, xs = np.meshgrid(np.linspace(size / 2, -size / 2, rows), np.linspace(-size / 2, size / 2, cols),
                         indexing="ij")
    zs = bulge * np.exp(-(xs**2 + ys**2) / 0.3)
    vertices = np.stack([xs, ys, zs], -1).reshape(-1, 3).astype(np.float32)
    faces = []
    for r in range(rows - 1):
        for c in range(cols - 1):
            a, b, d, e = r * cols + c, r * cols + c + 1, (r + 1) * cols + c, (r + 1) * cols + c + 1
            faces += [(a, d, b), (b, d, e)]  # counter-clockwise seen from +z (y up)
    return vertices, np.asarray(faces, dtype=np.int64)


def point_buf_for(faces: np.ndarray, n: int) -> np.ndarray:
    """Up to 8 faces around each vertex, padded with index F (0-based)."""
    buf = np.full((n, 8), len(faces), dtype=np.int64)
    fill = np.zeros(n, dtype=np.int64)
    for f, tri in enumerate(faces):
        for v in tri:
            if fill[v] < 8:
                buf[v, fill[v]] = f
                fill[v] += 1
    return buf


def write_bfm_mat(path: Path, drop: tuple[str, ...] = (), override: dict | None = None) -> Path:
    """Write a tiny ``BFM_model_front.mat`` with D3DFR's keys, shapes and 1-based indices."""
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    vertices, faces = grid_mesh()
    n = len(vertices)
    mat = {
        "meanshape": (vertices + np.array([0.1, -0.2, 0.3], dtype=np.float32)).reshape(1, -1),
        "idBase": rng.normal(scale=0.01, size=(3 * n, 80)).astype(np.float32),
        "exBase": rng.normal(scale=0.01, size=(3 * n, 64)).astype(np.float32),
        "meantex": np.full((1, 3 * n), 180.0, dtype=np.float32),
        "texBase": rng.normal(scale=2.0, size=(3 * n, 80)).astype(np.float32),
        "tri": faces + 1,
        "point_buf": point_buf_for(faces, n) + 1,
        "keypoints": (np.arange(68) % n + 1).reshape(1, 68).astype(np.float64),
        "frontmask2_idx": np.arange(1, n + 1).reshape(-1, 1),
        "tri_mask2": faces + 1,
        "skinmask": np.ones((1, n), dtype=np.float64),
    }
    for key in drop:
        mat.pop(key)
    mat.update(override or {})
    savemat(str(path), mat)
    return path


@pytest.fixture
def bfm_path(tmp_path: Path) -> Path:
    return write_bfm_mat(tmp_path / "BFM_model_front.mat")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def private_feature_cache(tmp_path_factory):
    """Inception features the tests keep go to a scratch folder, not the user's cache."""
    patch = pytest.MonkeyPatch()
    patch.setenv("SGPN_CACHE", str(tmp_path_factory.mktemp("sgpn-cache")))
    yield
    patch.undo()


GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def write_portraits(folder: Path, count: int = 5) -> list[Path]:
    """``portrait_{i}.jpg``: matplotlib's real portrait, mirrored, scaled, turned and darkened in
    turn, so that each is a different photo of one detectable face."""
    from PIL import Image, ImageEnhance, ImageOps

    folder.mkdir(parents=True, exist_ok=True)
    edits = [lambda im: im, ImageOps.mirror, lambda im: im.resize((410, 480), Image.Resampling.BICUBIC),
             lambda im: im.rotate(8, resample=Image.Resampling.BICUBIC, fillcolor=(90, 90, 90)),
             lambda im: ImageEnhance.Brightness(im).enhance(0.8)]
    written = []
    with Image.open(GRACE_HOPPER) as portrait:
        for i in range(count):
            written.append(folder / f"portrait_{i}.jpg")
            edits[i % len(edits)](portrait.convert("RGB")).save(written[-1], quality=92)
    return written
