"""The shape prior: a low-quality face to its 3DMM coefficients z_3d and rendered face I_3d.

As in the official release, for a ``B x 3 x S x S`` crop in [-1, 1]:

1. warp the crop into D3DFR's 224 x 224 frame and map it to [0, 1];
2. regress z_3d (257) with :class:`~sgpn.nets.regressor.CoefficientRegressor`;
3. build the posed, lit mesh with :class:`~sgpn.face3d.face_model.FaceModel` and render it at 224;
4. warp the render and its mask back to S x S; I_3d = (render * mask) * 2 - 1 (background -1).

The warp. SGPN crops are aligned by a similarity that puts five landmarks (eye centres, nose
tip, mouth corners) on a square-padded 96 x 112 template with inner padding 0.25. The release
then re-detects the five points and fits D3DFR's crop to them (a scale + translation fit of
D3DFR's 3D five-point template, scaled to 102 px). For a crop aligned to the template, those
five points *are* the template, so the warp is one fixed similarity per crop size, computed
here from the two templates (:func:`crop_to_d3dfr_matrix`). ``alignment="resize"`` instead
treats the crop as already framed like D3DFR's and simply resizes (rendering directly at S).

A regressor built for a smaller frame (``CoefficientRegressor(input_size=64)``) sees D3DFR's
frame at that size: the camera scales with the image, so nothing else changes.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine
from torch import nn

from sgpn.face3d.coefficients import check_coefficients
from sgpn.face3d.face_model import FaceModel, FaceOutput, load_face_model
from sgpn.face3d.renderer import Renderer
from sgpn.images import RANGE_TOLERANCE, check_images
from sgpn.nets.regressor import INPUT_SIZE, CoefficientRegressor

#: The classic 96 x 112 five-point template (x, y): eyes, nose tip, mouth corners.
TEMPLATE_96x112 = np.array([[30.29459953, 51.69630051], [65.53179932, 51.50139999],
                            [48.02519989, 71.73660278], [33.54930115, 92.3655014],
                            [62.72990036, 92.20410156]])
TEMPLATE_SIZE = (96, 112)
#: SGPN pads the template region by this fraction on each side before scaling to the crop.
INNER_PADDING = 0.25
#: D3DFR's 3D five-point template (x, y, z), same point order.
D3DFR_LANDMARKS_3D = np.array([[-0.3115, 0.2904, 0.1338], [0.3098, 0.2897, 0.1318],
                               [0.0033, -0.0462, 0.5524], [-0.2522, -0.3813, 0.2241],
                               [0.2485, -0.3813, 0.2224]])
#: D3DFR scales the crop so that the fitted template scale becomes this many pixels.
D3DFR_RESCALE = 102.0
ALIGNMENTS = ("template", "resize")


def template_points(size: int) -> np.ndarray:
    """Where the five landmarks of an SGPN-aligned ``size`` x ``size`` crop lie (x, y)."""
    points = TEMPLATE_96x112.copy()
    crop = np.array(TEMPLATE_SIZE, dtype=np.float64)
    square = crop.max() - crop  # make the template region square: pad x by 8 px
    points += square / 2
    crop += square
    padding = crop * INNER_PADDING * 2
    points += padding / 2
    crop += np.round(padding)
    return points * (size / crop[0])


def _fit_scale_translation(points_2d: np.ndarray, points_3d: np.ndarray) -> tuple[np.ndarray, float]:
    """D3DFR's least-squares fit of an affine camera; returns its translation and mean scale."""
    n = len(points_2d)
    system = np.zeros((2 * n, 8))
    system[0::2, 0:3] = points_3d
    system[0::2, 3] = 1
    system[1::2, 4:7] = points_3d
    system[1::2, 7] = 1
    solution = np.linalg.lstsq(system, points_2d.reshape(-1), rcond=None)[0]
    scale = (np.linalg.norm(solution[0:3]) + np.linalg.norm(solution[4:7])) / 2
    return solution[[3, 7]], scale


def crop_to_d3dfr_matrix(size: int) -> torch.Tensor:
    """The ``2 x 3`` similarity from an SGPN-aligned ``size`` crop to D3DFR's 224 frame.

    Reproduces D3DFR's preprocessing on the template's five points: flip y up, fit scale and
    translation of the 3D template, rescale so the face is 102 px, crop 224 around the centre,
    flip y back. All steps are scale + translation, so the result is exact for aligned crops.
    """
    points = template_points(size)
    flipped = points.copy()
    flipped[:, 1] = size - 1 - flipped[:, 1]
    translation, fitted_scale = _fit_scale_translation(flipped, D3DFR_LANDMARKS_3D)
    scale = D3DFR_RESCALE / fitted_scale
    resized = int(size * scale)  # D3DFR truncates the resized image size
    offset = resized / 2 - INPUT_SIZE / 2
    # x' = scale (x - tx + size/2) - offset;  y' = 223 - [scale (size-1-y - ty + size/2) - offset]
    bx = scale * (size / 2 - translation[0]) - offset
    by = (INPUT_SIZE - 1) - scale * (size - 1 - translation[1] + size / 2) + offset
    return torch.tensor([[scale, 0.0, bx], [0.0, scale, by]], dtype=torch.float32)


def crop_to_frame_matrix(size: int, frame_size: int = INPUT_SIZE) -> torch.Tensor:
    """:func:`crop_to_d3dfr_matrix` for D3DFR's frame drawn at ``frame_size`` instead of 224.

    The camera scales focal length and principal point with the image (pixel centres at
    integers), so a 224-frame pixel x becomes k (x + 0.5) - 0.5 with k = frame_size / 224.
    """
    matrix = crop_to_d3dfr_matrix(size)
    k = frame_size / INPUT_SIZE
    if k == 1:
        return matrix
    scaled = matrix * k
    scaled[:, 2] += 0.5 * k - 0.5
    return scaled


def invert_similarity(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of a ``2 x 3`` (or ``B x 2 x 3``) affine matrix."""
    full = torch.cat([matrix, matrix.new_tensor([0.0, 0.0, 1.0]).expand(*matrix.shape[:-2], 1, 3)], -2)
    return torch.linalg.inv(full)[..., :2, :]


def apply_similarity(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Points ``(..., 2)`` mapped by a ``2 x 3`` affine matrix (computed in the matrix's dtype)."""
    return points.to(matrix.dtype) @ matrix[:, :2].T + matrix[:, 2]


class ShapePriorOutput(NamedTuple):
    coeffs: torch.Tensor  # (B, 257) z_3d
    image: torch.Tensor  # (B, 3, S, S) I_3d in [-1, 1], background -1
    mask: torch.Tensor  # (B, 1, S, S) render coverage in the crop frame (0..1 at warped edges)
    face: FaceOutput  # the mesh (camera space of D3DFR's 224 frame)
    regressor_input: torch.Tensor  # (B, 3, F, F) what the regressor saw, RGB in [0, 1] (F = 224)


class ShapePrior(nn.Module):
    """LQ crops in [-1, 1] -> z_3d, I_3d, mask and mesh (SGPN's shape restoration module).

    ``regressor`` defaults to a fresh :class:`CoefficientRegressor` (load D3DFR weights into it),
    ``face_model`` to :func:`~sgpn.face3d.face_model.load_face_model` (BFM if configured, else the
    kit's open model), ``renderer`` to :class:`~sgpn.face3d.renderer.Renderer` at the regressor's
    input size (224 for D3DFR's network).
    """

    def __init__(self, regressor: CoefficientRegressor | None = None,
                 face_model: FaceModel | None = None, renderer: Renderer | None = None,
                 alignment: str = "template"):
        super().__init__()
        if alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
        self.regressor = regressor if regressor is not None else CoefficientRegressor()
        self.face_model = face_model if face_model is not None else load_face_model()
        self.renderer = renderer if renderer is not None else Renderer(self.frame_size)
        if self.renderer.image_size != self.frame_size:
            raise ValueError(f"the renderer draws at {self.renderer.image_size} px but the "
                             f"regressor's frame is {self.frame_size} px; they must agree")
        self.alignment = alignment

    @property
    def frame_size(self) -> int:
        """Side of D3DFR's frame as this regressor sees it (224 for D3DFR's network)."""
        return self.regressor.input_size

    def warp_to_frame(self, image: torch.Tensor) -> torch.Tensor:
        """Any ``B x C x S x S`` map of the crop, moved into the regressor's frame (zeros
        outside the crop)."""
        size, frame = image.shape[-1], self.frame_size
        if self.alignment == "resize":
            if size == frame:
                return image
            return F.interpolate(image, size=(frame, frame), mode="bilinear",
                                 align_corners=False, antialias=size > frame)

        matrix = crop_to_frame_matrix(size, frame).to(image).expand(image.shape[0], 2, 3)
        return warp_affine(image, matrix, (frame, frame), align_corners=True)

    def points_to_frame(self, points: torch.Tensor, size: int) -> torch.Tensor:
        """Pixel coordinates ``(..., 2)`` in a ``size`` crop to the regressor's frame."""
        if self.alignment == "resize":
            k = self.frame_size / size
            return (points + 0.5) * k - 0.5
        return apply_similarity(crop_to_frame_matrix(size, self.frame_size).to(points), points)

    def to_regressor_frame(self, lq: torch.Tensor) -> torch.Tensor:
        """The crop in D3DFR's frame, RGB [0, 1] (outside the crop: 0.5, as the release's
        zero padding of the [-1, 1] image gives)."""
        return self.warp_to_frame(lq) * 0.5 + 0.5

    def render(self, face: FaceOutput, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Render the face into the crop frame: image in [0, 1] and mask, both at ``size``."""
        if self.alignment == "resize":
            rendered = Renderer(size, self.renderer.backend)(face, self.face_model.faces)
            return rendered.image, rendered.mask

        rendered = self.renderer(face, self.face_model.faces)
        back = invert_similarity(crop_to_frame_matrix(size, self.frame_size)).to(rendered.image)
        back = back.expand(rendered.image.shape[0], 2, 3)
        image = warp_affine(rendered.image, back, (size, size), align_corners=True)
        mask = warp_affine(rendered.mask, back, (size, size), align_corners=True)
        return image, mask

    def forward(self, lq: torch.Tensor, toward: torch.Tensor | None = None, weight: float = 0.0) -> ShapePriorOutput:
        """``toward``, ``weight``: render the regressor's coefficients moved ``weight`` of the way
        towards ``toward`` (``(B, 257)``, e.g. a synthetic face's true ones; weight 1 renders them
        exactly), to ask what a better shape prior would change."""
        check_images(lq, "lq", square=True, value_range=(-1.0, 1.0), tolerance=RANGE_TOLERANCE)
        size = lq.shape[-1]
        framed = self.to_regressor_frame(lq)
        if weight == 1:
            coeffs = check_coefficients(toward, "toward")
        else:
            coeffs = self.regressor(framed)
            if weight:
                coeffs = torch.lerp(coeffs, check_coefficients(toward, "toward"), weight)
        face = self.face_model(coeffs, self.frame_size if self.alignment == "template" else size)
        image, mask = self.render(face, size)
        return ShapePriorOutput(coeffs=coeffs, image=(image * mask) * 2 - 1, mask=mask,
                                face=face, regressor_input=framed)


def build_shape_prior(face_model: FaceModel, regressor: Mapping | None, alignment: str) -> ShapePrior:
    """A shape prior whose regressor is built from ``regressor`` (its ``backbone`` and
    ``input_size``, as training configs and checkpoints' hyper-parameters give them)."""
    return ShapePrior(regressor=CoefficientRegressor(**dict(regressor or {})), face_model=face_model,
                      alignment=alignment)
