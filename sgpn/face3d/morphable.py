"""The arrays that define a morphable model, and the Basel Face Model's file.

Two sources of bases share one :class:`MorphableArrays` container: the Basel Face Model file
``BFM_model_front.mat`` that users obtain themselves (:func:`load_bfm`), and the kit's built-in
open model made by code (:mod:`sgpn.face3d.builtin_model`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.io import loadmat

#: Environment variable that points the kit at a ``BFM_model_front.mat``.
BFM_ENV = "SGPN_BFM"


@dataclass
class MorphableArrays:
    """The arrays that define a morphable model, in the kit's internal conventions.

    ``N`` vertices, ``F`` faces. Bases are stored like the BFM: rows interleave x, y, z of each
    vertex. Indices are 0-based. Faces are counter-clockwise seen from the camera, so D3DFR's
    normal (v1 - v2) x (v2 - v3) points towards the viewer.
    """

    mean_shape: np.ndarray  # (N, 3) float
    id_basis: np.ndarray  # (3N, 80)
    exp_basis: np.ndarray  # (3N, 64)
    mean_tex: np.ndarray  # (3N,) in 0..1
    tex_basis: np.ndarray  # (3N, 80) in 0..1 units
    faces: np.ndarray  # (F, 3) int, 0-based
    point_buf: np.ndarray  # (N, 8) int, 0-based faces around each vertex; F = padding
    landmarks: np.ndarray  # (68,) int vertex indices, iBUG-68 order
    skin_mask: np.ndarray  # (N,) bool
    regions: np.ndarray | None = None  # (N,) int index into region_names
    region_names: tuple[str, ...] = ()
    #: names of the leading components of each basis, e.g. {"id": ["face width", ...]}
    component_names: dict[str, list[str]] = field(default_factory=dict)
    name: str = "morphable model"

    def validate(self) -> "MorphableArrays":
        """Check shapes, ranges and finiteness; raise ``ValueError`` naming the problem."""
        n = _require_shape("mean_shape", self.mean_shape, (None, 3))[0]
        _require_shape("id_basis", self.id_basis, (3 * n, 80))
        _require_shape("exp_basis", self.exp_basis, (3 * n, 64))
        _require_shape("mean_tex", self.mean_tex, (3 * n,))
        _require_shape("tex_basis", self.tex_basis, (3 * n, 80))
        f = _require_shape("faces", self.faces, (None, 3))[0]
        _require_shape("point_buf", self.point_buf, (n, 8))
        _require_shape("landmarks", self.landmarks, (68,))
        _require_shape("skin_mask", self.skin_mask, (n,))
        for name in ("mean_shape", "id_basis", "exp_basis", "mean_tex", "tex_basis"):
            if not np.isfinite(getattr(self, name)).all():
                raise ValueError(f"{self.name}: '{name}' contains NaN or Inf")
        _require_index_range("faces", self.faces, n)
        _require_index_range("point_buf", self.point_buf, f + 1)
        _require_index_range("landmarks", self.landmarks, n)
        if self.regions is not None:
            _require_shape("regions", self.regions, (n,))
            _require_index_range("regions", self.regions, len(self.region_names))
        return self


def _require_shape(name: str, array: np.ndarray, shape: tuple) -> tuple[int, ...]:
    array = np.asarray(array)
    ok = array.ndim == len(shape) and all(s is None or a == s for a, s in zip(array.shape, shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"'{name}' must have shape {want}, got {array.shape}")
    return array.shape


def _require_index_range(name: str, array: np.ndarray, upper: int) -> None:
    array = np.asarray(array)
    if array.size and (array.min() < 0 or array.max() >= upper):
        raise ValueError(
            f"'{name}' holds indices in [{array.min()}, {array.max()}], outside [0, {upper - 1}]"
        )


# ----------------------------------------------------------------------------------------------
# BFM_model_front.mat
# ----------------------------------------------------------------------------------------------

BFM_KEYS = ("meanshape", "idBase", "exBase", "meantex", "texBase", "tri", "point_buf",
            "keypoints", "skinmask")


def load_bfm(path: str | os.PathLike) -> MorphableArrays:
    """Load D3DFR's ``BFM_model_front.mat`` (1-based MATLAB indices, 0..255 texture).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the problem for
    a file that is not a readable .mat, lacks a key or holds arrays of the wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"BFM file not found: {path}. Obtain BFM_model_front.mat as described in the "
            f"Deep3DFaceRecon instructions and point {BFM_ENV} or the config's face_model at it."
        )
    try:
        mat = loadmat(str(path))
    except NotImplementedError as err:  # MATLAB v7.3 files are HDF5
        raise ValueError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save it "
                         f"with scipy.io.savemat or MATLAB's -v7 flag ({err})") from err
    except Exception as err:  # scipy raises many types for damaged files
        raise ValueError(f"{path} is not a readable .mat file: {err}") from err
    missing = [k for k in BFM_KEYS if k not in mat]
    if missing:
        raise ValueError(f"{path} is missing BFM key(s) {missing}; found {sorted(k for k in mat if not k.startswith('__'))}")

    def flat(key: str) -> np.ndarray:
        return np.asarray(mat[key]).reshape(-1)

    try:
        arrays = MorphableArrays(
            mean_shape=flat("meanshape").astype(np.float32).reshape(-1, 3),
            id_basis=np.asarray(mat["idBase"], dtype=np.float32),
            exp_basis=np.asarray(mat["exBase"], dtype=np.float32),
            mean_tex=flat("meantex").astype(np.float32) / 255.0,
            tex_basis=np.asarray(mat["texBase"], dtype=np.float32) / 255.0,
            faces=np.asarray(mat["tri"]).astype(np.int64) - 1,
            point_buf=np.asarray(mat["point_buf"]).astype(np.int64) - 1,
            landmarks=flat("keypoints").astype(np.int64) - 1,
            skin_mask=flat("skinmask").astype(bool),
            name=f"BFM ({path.name})",
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: BFM arrays could not be read: {err}") from err
    try:
        return arrays.validate()
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
