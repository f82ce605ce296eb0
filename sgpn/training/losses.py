"""The losses of SGPN's objective and of the shape prior's training, in one place.

SGPN (the paper's equation)::

    L = L_rec + λ_adv L_adv + λ_lm L_3dlm + λ_vt L_mesh      (λ_adv 1, λ_lm 100, λ_vt 100)

* L_rec: L1 (in :class:`~sgpn.training.SGPNModule`) plus a perceptual term, VGG-16
  (:class:`VGGPerceptual`) when its ImageNet weights are on disk, else
  :func:`feature_matching_loss` on the discriminator's features;
* L_3dlm: :func:`landmark_loss_3d` on the frozen teacher's 3D landmarks (:meth:`~sgpn.face3d.face_model.FaceModel.landmarks_3d`);
* L_mesh: :class:`MeshLoss`, shape and colour of the module's mesh against the teacher's.

The shape prior: :class:`FaceSpaceLoss` compares coefficient vectors through the face they
draw (exact Gram-matrix forms of the vertex, albedo and lighting distances, and the projected
landmarks); D3DFR's self-supervised losses (:func:`photometric_loss`, :func:`landmark_loss_2d`,
:func:`coefficient_regulariser`) serve faces without ground truth.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from sgpn.face3d import camera, coefficients
from sgpn.face3d.face_model import FaceModel, vertex_gram

#: D3DFR's loss weights (photometric, landmarks, coefficient regulariser, lighting).
D3DFR_WEIGHTS = {"photo": 1.92, "landmark": 1.6e-3, "reg": 3.0e-4, "gamma": 10.0}
#: D3DFR's regulariser weights for identity, expression and texture coefficients.
D3DFR_REG = {"id": 1.0, "exp": 0.8, "tex": 1.7e-2}
#: Perceptual-term choices; "auto" picks VGG-16 when its weights are on disk.
PERCEPTUAL_TERMS = ("auto", "vgg16", "feature_matching", "none")
VGG16_FILE = "vgg16-397923af.pth"


# ----------------------------------------------------------------------------------------------
# Geometry: landmarks, mesh and face-space losses
# ----------------------------------------------------------------------------------------------


def shape_gram(face_model: FaceModel) -> torch.Tensor:
    """:func:`vertex_gram` of the shape basis (identity then expression columns)."""
    return vertex_gram(torch.cat([face_model.id_basis, face_model.exp_basis], 1))


def shape_delta(delta: torch.Tensor) -> torch.Tensor:
    """The identity and expression parts of a ``(B, 257)`` coefficient difference, side by side."""
    return torch.cat([delta[:, coefficients.SLICES["id"]], delta[:, coefficients.SLICES["exp"]]], 1)


def quadratic_form(delta: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """``d^T G d`` for each row ``d`` of ``delta``."""
    return ((delta @ gram) * delta).sum(-1)


class MeshLoss(nn.Module):
    """L_mesh: the mean squared distance over all vertices between two meshes' shapes S, plus
    the same for their colours C (the lit vertex colours, what I_3d shows).

    The shape is linear in the coefficients (S = mean + B_id a + B_exp b, in model space), so
    mean_v |S_v - S'_v|^2 = d^T (B^T B / N) d with d the coefficient difference: the Gram
    matrix is computed once and the term costs a 144 x 144 product per image instead of two
    meshes, with the same value. The colours depend on pose and lighting, so they are compared
    vertex by vertex.
    """

    def __init__(self, face_model: FaceModel):
        super().__init__()
        self.register_buffer("shape_gram", shape_gram(face_model), persistent=False)

    def shape(self, coeffs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Batch mean of the per-vertex mean squared distance between the unposed shapes."""
        return quadratic_form(shape_delta(coeffs - target), self.shape_gram).mean()

    @staticmethod
    def colour(colors: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Batch mean of the per-vertex mean squared distance between ``(B, N, 3)`` colours."""
        return (colors - target).pow(2).sum(-1).mean()

    def forward(self, coeffs: torch.Tensor, colors: torch.Tensor, target_coeffs: torch.Tensor,
                target_colors: torch.Tensor) -> torch.Tensor:
        return self.shape(coeffs, target_coeffs) + self.colour(colors, target_colors)


class FaceSpaceLoss(nn.Module):
    """Two coefficient vectors compared through the face they draw, not number by number.

    Why not a plain MSE over the 257 values: they differ by orders of magnitude in what they
    change. Each of the 80 identity and 80 texture components has unit variance, but the tail
    of each basis moves vertices or colours a hundred times less than the leading components
    (nothing a 64 px face shows), while pose (0.1-0.25 rad) and lighting (0.05-0.15) change
    every pixel. One MSE spends almost all of its weight on the invisible tail: trained with it
    on the same 8,000 faces for the same 6 minutes, the kit's regressor reads landmarks and pose
    half as well (NME 0.080 and 5.9 degrees, against 0.035 and 2.2 with this loss).

    Four terms, each in the face's own units:

    - ``shape``: mean squared vertex distance of the unposed shapes (identity + expression);
    - ``albedo``: mean squared distance of the vertex albedos (texture);
    - ``light``: mean squared irradiance difference over the mean face's normals (lighting);
    - ``landmarks``: mean squared distance of the 68 projected landmarks in a ``frame_size``
      frame (pose and translation, as the image shows them, and the shape they move).

    The first three are quadratic forms of the coefficient difference (Gram matrices computed
    once, exact). Each term is divided by its value when the mean face is guessed for random
    faces of the model (``FaceModel.random_coefficients``), so every term starts near 1 and
    none can drown the others.
    """

    TERMS = ("shape", "albedo", "light", "landmarks")

    def __init__(self, face_model: FaceModel, frame_size: int, reference_faces: int = 512):
        super().__init__()
        self.face_model, self.frame_size = face_model, frame_size
        with torch.no_grad():
            mean_normals = face_model.compute_normals(face_model.mean_shape.view(1, -1, 3))[0]
            sh = FaceModel.sh_basis(mean_normals)
        self.register_buffer("shape_gram", shape_gram(face_model), persistent=False)
        self.register_buffer("albedo_gram", vertex_gram(face_model.tex_basis), persistent=False)
        self.register_buffer("light_gram", (sh.T @ sh / len(sh)), persistent=False)
        self.register_buffer("scale", torch.ones(len(self.TERMS)), persistent=False)
        with torch.no_grad():
            faces = face_model.random_coefficients(reference_faces, generator=torch.Generator().manual_seed(0))
            reference = self.raw_terms(torch.zeros_like(faces), faces)
        self.scale = torch.stack([reference[name] for name in self.TERMS])

    def project(self, coeffs: torch.Tensor) -> torch.Tensor:
        return camera.project(self.face_model.landmarks_3d(coeffs), self.frame_size)

    def raw_terms(self, coeffs: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The four terms in the face's units (batch means), before normalisation."""
        delta = coeffs - target
        light = delta[:, coefficients.SLICES["gamma"]].reshape(-1, 3, 9)
        return {"shape": quadratic_form(shape_delta(delta), self.shape_gram).mean(),
                "albedo": quadratic_form(delta[:, coefficients.SLICES["tex"]], self.albedo_gram).mean(),
                "light": quadratic_form(light, self.light_gram).sum(1).mean(),
                "landmarks": (self.project(coeffs) - self.project(target)).pow(2).sum(-1).mean()}

    def forward(self, coeffs: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The four normalised terms (1 = as far off as the mean face on a random face)."""
        raw = self.raw_terms(coeffs, target)
        return {name: raw[name] / self.scale[i] for i, name in enumerate(self.TERMS)}


def landmark_loss_3d(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between corresponding 3D landmarks."""
    return (predicted - target).pow(2).sum(-1).mean()


# ----------------------------------------------------------------------------------------------
# D3DFR's self-supervised losses
# ----------------------------------------------------------------------------------------------


def photometric_loss(rendered: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """D3DFR's photometric loss: mean over masked pixels of the colour distance."""
    distance = torch.sqrt(1e-8 + (rendered - image).pow(2).sum(1, keepdim=True))
    return (distance * mask).sum() / mask.sum().clamp_min(1.0)


def landmark_loss_2d(predicted: torch.Tensor, target: torch.Tensor, frame_size: int) -> torch.Tensor:
    """D3DFR's landmark loss: squared pixel distances in the 224 frame, nose and inner mouth
    weighted 20."""
    weight = torch.ones(68, device=predicted.device)
    weight[28:31] = 20
    weight[-8:] = 20
    scale = 224.0 / frame_size
    return ((predicted - target) * scale).pow(2).sum(-1).mul(weight).mean()


def coefficient_regulariser(coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """D3DFR's regulariser: weighted squared identity, expression and texture coefficients,
    and the spread of the lighting across colours (it prefers white light)."""
    parts = coefficients.split(coeffs)
    reg = sum(w * getattr(parts, k).pow(2).sum(1) for k, w in D3DFR_REG.items()).mean()
    gamma = parts.gamma.reshape(-1, 3, 9)
    gamma_spread = (gamma - gamma.mean(1, keepdim=True)).pow(2).mean()
    return reg, gamma_spread


# ----------------------------------------------------------------------------------------------
# Perceptual term
# ----------------------------------------------------------------------------------------------


def vgg16_weights_file() -> Path | None:
    """torchvision's ImageNet VGG-16 weights if they are already in the torch hub cache."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
    return path if path.is_file() else None


def resolve_perceptual(choice: str) -> str:
    """The perceptual term actually used: ``"auto"`` becomes ``"vgg16"`` when the weights are
    on disk, else ``"feature_matching"``. Asking for ``"vgg16"`` without them is an error."""
    if choice not in PERCEPTUAL_TERMS:
        raise ValueError(f"perceptual must be one of {PERCEPTUAL_TERMS}, got {choice!r}")
    if choice == "auto":
        return "vgg16" if vgg16_weights_file() else "feature_matching"
    if choice == "vgg16" and vgg16_weights_file() is None:
        raise FileNotFoundError(
            f"perceptual='vgg16' needs torchvision's ImageNet weights at "
            f"{Path(torch.hub.get_dir()) / 'checkpoints' / VGG16_FILE}; nothing is downloaded. "
            f"Copy the file there, or use perceptual='feature_matching'")
    return choice


class VGGPerceptual(nn.Module):
    """L1 between VGG-16 features (relu1_2, relu2_2, relu3_3, relu4_3) of two [-1, 1] images."""

    CUTS = (4, 9, 16, 23)

    def __init__(self, weights: Path):
        super().__init__()

        vgg = torchvision.models.vgg16(weights=None)
        vgg.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.features = vgg.features[: self.CUTS[-1]].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        return super().train(False)  # a fixed feature extractor

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = (torch.cat([output, target]) * 0.5 + 0.5 - self.mean) / self.std
        loss, start = 0.0, 0
        for cut in self.CUTS:
            x = self.features[start:cut](x)
            a, b = x.chunk(2)
            loss = loss + F.l1_loss(a, b.detach())
            start = cut
        return loss


def feature_matching_loss(fake: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
    """Mean L1 between the discriminator's block features on the output and on the HQ face."""
    return sum(F.l1_loss(f, r.detach()) for f, r in zip(fake, real)) / len(fake)
