"""The 3D morphable face model: 257 coefficients to a posed, lit, projected mesh.

The math follows D3DFR's ``ParametricFaceModel`` so that coefficients regressed by D3DFR or the
official SGPN release mean the same thing here:

* shape   = mean_shape (re-centred on its centroid) + id_basis @ id + exp_basis @ exp
* albedo  = mean_tex + tex_basis @ tex                       (0..1, BFM's 0..255 divided by 255)
* normals = per-face normals summed over the faces in ``point_buf`` and normalised
* pose    = v @ R + t with R = (Rz Ry Rx)^T from the Euler angles
* colour  = albedo * (SH basis(n_rotated) @ (gamma + 0.8 on band 0))
* camera  = D3DFR's pinhole camera (:mod:`sgpn.face3d.camera`)

Two sources of bases share one :class:`MorphableArrays` container: the Basel Face Model file
``BFM_model_front.mat`` that users obtain themselves (:func:`load_bfm`), and the kit's built-in
open model made by code (:mod:`sgpn.face3d.builtin_model`), which is the default.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from sgpn.face3d import camera, coefficients
from sgpn.face3d.builtin_model import build_open_face_model
from sgpn.face3d.morphable import BFM_ENV, MorphableArrays, load_bfm

#: D3DFR's default lighting: 0.8 on SH band 0 of every colour, added to gamma.
DEFAULT_LIGHT = 0.8

#: Where each first-order SH band lights the face from, as the viewer sees the image, for a
#: positive coefficient: D3DFR's basis puts a minus sign on bands 1, 3, 5 and 7 (Y1 = -y, Y3 = -x
#: up to a constant), so a positive band 1 brightens normals that point down. Camera space is
#: x right, y up, z towards the viewer.
LIGHT_DIRECTIONS: dict[str, tuple[int, float]] = {
    "above": (1, -1.0), "below": (1, 1.0), "left": (3, 1.0), "right": (3, -1.0), "front": (2, 1.0),
}

_SH_A = (math.pi, 2 * math.pi / math.sqrt(3.0), 2 * math.pi / math.sqrt(8.0))
_SH_C = (
    1 / math.sqrt(4 * math.pi),
    math.sqrt(3.0) / math.sqrt(4 * math.pi),
    3 * math.sqrt(5.0) / math.sqrt(12 * math.pi),
)


# ----------------------------------------------------------------------------------------------
# The differentiable face model
# ----------------------------------------------------------------------------------------------


class FaceOutput(NamedTuple):
    """Everything the face model computes for a batch of ``B`` coefficient vectors."""

    shape: torch.Tensor  # (B, N, 3) unposed model-space shape (identity + expression)
    vertices: torch.Tensor  # (B, N, 3) camera space (D3DFR: x right, y up, z depth)
    normals: torch.Tensor  # (B, N, 3) rotated unit normals
    albedo: torch.Tensor  # (B, N, 3) in 0..1
    colors: torch.Tensor  # (B, N, 3) lit vertex colours
    landmarks_3d: torch.Tensor  # (B, 68, 3) camera space
    landmarks_2d: torch.Tensor  # (B, 68, 2) pixels at ``image_size`` (x right, y down)


class FaceModel(nn.Module):
    """257 coefficients to mesh, colours and landmarks (D3DFR conventions, differentiable)."""

    def __init__(self, arrays: MorphableArrays):
        super().__init__()
        arrays.validate()
        mean_shape = torch.as_tensor(arrays.mean_shape, dtype=torch.float32)
        mean_shape = mean_shape - mean_shape.mean(dim=0, keepdim=True)
        self.register_buffer("mean_shape", mean_shape.reshape(-1))
        self.register_buffer("id_basis", torch.as_tensor(arrays.id_basis, dtype=torch.float32))
        self.register_buffer("exp_basis", torch.as_tensor(arrays.exp_basis, dtype=torch.float32))
        self.register_buffer("mean_tex", torch.as_tensor(arrays.mean_tex, dtype=torch.float32))
        self.register_buffer("tex_basis", torch.as_tensor(arrays.tex_basis, dtype=torch.float32))
        self.register_buffer("faces", torch.as_tensor(arrays.faces, dtype=torch.int64))
        self.register_buffer("point_buf", torch.as_tensor(arrays.point_buf, dtype=torch.int64))
        self.register_buffer("landmark_index", torch.as_tensor(arrays.landmarks, dtype=torch.int64))
        self.register_buffer("skin_mask", torch.as_tensor(arrays.skin_mask, dtype=torch.bool))
        regions = arrays.regions if arrays.regions is not None else np.zeros(len(arrays.mean_shape))
        self.register_buffer("regions", torch.as_tensor(regions, dtype=torch.int64))
        self.region_names = tuple(arrays.region_names) or ("face",)
        self.component_names = {k: list(v) for k, v in arrays.component_names.items()}
        self.name = arrays.name

    @property
    def num_vertices(self) -> int:
        return self.mean_shape.numel() // 3

    @property
    def num_faces(self) -> int:
        return self.faces.shape[0]

    def extra_repr(self) -> str:
        return f"{self.name}: {self.num_vertices} vertices, {self.num_faces} faces"

    # -- the pieces, each usable on its own (the notebooks show them one by one) -------------

    def compute_shape(self, id_coeffs: torch.Tensor, exp_coeffs: torch.Tensor,
                      vertices: torch.Tensor | None = None) -> torch.Tensor:
        """Unposed shape ``(B, N, 3)`` from identity and expression coefficients; with
        ``vertices`` (indices), only those ``(B, K, 3)``, from their rows of the bases alone."""
        id_basis, exp_basis, mean_shape = self.id_basis, self.exp_basis, self.mean_shape
        if vertices is not None:
            rows = (vertices[:, None] * 3 + torch.arange(3, device=vertices.device)).reshape(-1)
            id_basis, exp_basis, mean_shape = id_basis[rows], exp_basis[rows], mean_shape[rows]
        offsets = id_coeffs @ id_basis.T + exp_coeffs @ exp_basis.T
        return (offsets + mean_shape).reshape(id_coeffs.shape[0], -1, 3)

    def compute_albedo(self, tex_coeffs: torch.Tensor) -> torch.Tensor:
        """Albedo ``(B, N, 3)`` in 0..1 (not clipped: the basis may overshoot slightly)."""
        albedo = tex_coeffs @ self.tex_basis.T + self.mean_tex
        return albedo.reshape(tex_coeffs.shape[0], -1, 3)

    def compute_normals(self, shape: torch.Tensor) -> torch.Tensor:
        """Vertex normals via ``point_buf``: summed unit face normals, normalised."""
        v1, v2, v3 = (shape[:, self.faces[:, k]] for k in range(3))
        face_normals = nn.functional.normalize(torch.cross(v1 - v2, v2 - v3, dim=-1), dim=-1)
        padding = face_normals.new_zeros(shape.shape[0], 1, 3)
        face_normals = torch.cat([face_normals, padding], dim=1)
        vertex_normals = face_normals[:, self.point_buf].sum(dim=2)
        return nn.functional.normalize(vertex_normals, dim=-1)

    @staticmethod
    def rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 3)`` matrix R = (Rz Ry Rx)^T, applied to row vectors as ``v @ R``."""
        x, y, z = angles.unbind(-1)
        one, zero = torch.ones_like(x), torch.zeros_like(x)
        rot_x = torch.stack([one, zero, zero, zero, x.cos(), -x.sin(), zero, x.sin(), x.cos()], -1)
        rot_y = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], -1)
        rot_z = torch.stack([z.cos(), -z.sin(), zero, z.sin(), z.cos(), zero, zero, zero, one], -1)
        rot = rot_z.view(-1, 3, 3) @ rot_y.view(-1, 3, 3) @ rot_x.view(-1, 3, 3)
        return rot.transpose(1, 2)

    @staticmethod
    def sh_basis(normals: torch.Tensor) -> torch.Tensor:
        """The nine second-order SH basis values ``(..., 9)`` of unit normals (D3DFR order)."""
        a, c = _SH_A, _SH_C
        nx, ny, nz = normals.unbind(-1)
        return torch.stack(
            [
                torch.full_like(nx, a[0] * c[0]),
                -a[1] * c[1] * ny,
                a[1] * c[1] * nz,
                -a[1] * c[1] * nx,
                a[2] * c[2] * nx * ny,
                -a[2] * c[2] * ny * nz,
                0.5 * a[2] * c[2] / math.sqrt(3.0) * (3 * nz**2 - 1),
                -a[2] * c[2] * nx * nz,
                0.5 * a[2] * c[2] * (nx**2 - ny**2),
            ],
            dim=-1,
        )

    @classmethod
    def shade(cls, albedo: torch.Tensor, normals: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """Lambertian SH lighting: ``albedo * (basis(n) @ gamma)`` per colour channel."""
        gamma = gamma.reshape(-1, 3, 9).clone()
        gamma[:, :, 0] = gamma[:, :, 0] + DEFAULT_LIGHT
        irradiance = cls.sh_basis(normals) @ gamma.transpose(1, 2)  # (B, N, 3)
        return albedo * irradiance

    @staticmethod
    def posed(points: torch.Tensor, rotation: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
        """Model-space ``(B, K, 3)`` points rotated, translated and moved into camera space."""
        return camera.to_camera(points @ rotation + trans[:, None, :])

    def forward(self, coeffs: torch.Tensor, image_size: int = 224) -> FaceOutput:
        """Build the posed, lit face for ``B x 257`` coefficients (rendered at ``image_size``)."""
        parts = coefficients.split(coeffs)
        shape = self.compute_shape(parts.id, parts.exp)
        albedo = self.compute_albedo(parts.tex)
        rotation = self.rotation_matrix(parts.angles)
        normals = self.compute_normals(shape) @ rotation
        vertices = self.posed(shape, rotation, parts.trans)
        colors = self.shade(albedo, normals, parts.gamma)
        landmarks_3d = vertices[:, self.landmark_index]
        return FaceOutput(
            shape=shape,
            vertices=vertices,
            normals=normals,
            albedo=albedo,
            colors=colors,
            landmarks_3d=landmarks_3d,
            landmarks_2d=camera.project(landmarks_3d, image_size),
        )

    def posed_vertices(self, coeffs: torch.Tensor) -> torch.Tensor:
        """``forward(coeffs).vertices`` without the normals, albedo and shading it also builds."""
        parts = coefficients.split(coeffs)
        shape = self.compute_shape(parts.id, parts.exp)
        return self.posed(shape, self.rotation_matrix(parts.angles), parts.trans)

    def landmarks_3d(self, coeffs: torch.Tensor) -> torch.Tensor:
        """``forward(coeffs).landmarks_3d`` (camera space) from the 68 landmark vertices alone:
        landmark losses and metrics read thousands of faces and need none of the rest of the mesh."""
        parts = coefficients.split(coeffs)
        shape = self.compute_shape(parts.id, parts.exp, self.landmark_index)
        return self.posed(shape, self.rotation_matrix(parts.angles), parts.trans)

    def landmarks_2d(self, coeffs: torch.Tensor, image_size: int = 224) -> torch.Tensor:
        """``forward(coeffs, image_size).landmarks_2d`` from the 68 landmark vertices alone."""
        return camera.project(self.landmarks_3d(coeffs), image_size)

    def random_coefficients(
        self, batch_size: int = 1, scale: float = 1.0, generator: torch.Generator | None = None,
        pose: bool = True, lighting: bool = True,
    ) -> torch.Tensor:
        """Draw plausible faces: id/exp/tex ~ N(0, scale^2) (the bases carry the variances),
        small head rotations, and a mostly white light that stays near D3DFR's default."""
        device = self.mean_shape.device

        def normal(*size, std=1.0):
            return torch.randn(*size, generator=generator, device=device) * std

        parts = {part: normal(batch_size, size, std=RANDOM_STD[part] * scale)
                 for part, size in (("id", 80), ("exp", 64), ("tex", 80))}
        if pose:
            parts["angles"] = normal(batch_size, 3) * torch.tensor([0.12, 0.25, 0.08], device=device)
        if lighting:
            # Mostly white light: bands shared by the colours, plus a faint per-colour tint.
            white = normal(batch_size, 1, 9) * torch.tensor([0.1] + [0.15] * 3 + [0.05] * 5, device=device)
            tint = normal(batch_size, 3, 9) * torch.tensor([0.03] + [0.01] * 8, device=device)
            parts["gamma"] = (white + tint).reshape(batch_size, 27)
        return coefficients.merge(**parts, batch_size=batch_size)


#: The standard deviation :meth:`FaceModel.random_coefficients` draws each part's coefficients
#: with (the bases carry the variances; expressions are kept milder than identities).
RANDOM_STD = {"id": 1.0, "exp": 0.7, "tex": 1.0}


def light_from(direction: str, strength: float) -> tuple[int, float]:
    """The SH band and the coefficient on it that light the face from ``direction`` ("above",
    "below", "left", "right" or "front", as the viewer sees the image) with ``strength``."""
    if direction not in LIGHT_DIRECTIONS:
        raise ValueError(f"unknown light direction {direction!r}; choose from {', '.join(LIGHT_DIRECTIONS)}")
    band, sign = LIGHT_DIRECTIONS[direction]
    return band, sign * strength


def load_face_model(source: str | os.PathLike | None = None) -> FaceModel:
    """The face model the kit uses.

    ``source`` is ``"open"`` for the built-in open model, or a path to ``BFM_model_front.mat``.
    ``None`` (the default everywhere) reads the ``SGPN_BFM`` environment variable and falls back
    to the built-in model when it is unset.
    """
    if source is None:
        source = os.environ.get(BFM_ENV) or "open"
    if str(source) == "open":
        return FaceModel(build_open_face_model())
    return FaceModel(load_bfm(source))


def vertex_gram(basis: torch.Tensor) -> torch.Tensor:
    """``B^T B / N`` for a ``(3N, K)`` basis: with it, the mean over the N vertices of the
    squared change that coefficients ``d`` make is ``d^T G d`` (no mesh needs building)."""
    basis = basis.double()
    return (basis.T @ basis / (basis.shape[0] // 3)).float()
