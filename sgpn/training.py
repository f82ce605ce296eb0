"""Training the shape prior and SGPN with Lightning.

Two LightningModules, both driven by ``sgpn fit --config configs/....yaml``:

* :class:`TeacherModule` plays D3DFR's role: a coefficient regressor trained on HQ faces, with
  the ground-truth coefficients where the data has them (the synthetic faces do), compared
  through the face they draw (:class:`FaceSpaceLoss`), and D3DFR's self-supervised losses
  through the renderer (photometric on skin, 68 landmarks, coefficient regulariser) for faces
  without them. With ``train_on="lq"`` and a ``teacher_ckpt`` it instead fine-tunes a
  regressor on low-quality faces against a frozen teacher that sees the HQ face (the paper's
  point about D3DFR failing on LQ input, and the separately fine-tuned D3DFR of variant C).
* :class:`SGPNModule` trains the restoration network, its discriminator and the shape
  restoration module (a :class:`~sgpn.shape_prior.ShapePrior` initialised from the teacher)
  jointly, with the paper's losses::

      L = L_rec + λ_adv L_adv + λ_lm L_3dlm + λ_vt L_mesh      (λ_adv 1, λ_lm 100, λ_vt 100)

  - L_rec: L1, plus a VGG-16 perceptual term when ImageNet weights are on disk (nothing is
    downloaded), otherwise feature matching on the discriminator's features;
  - L_adv: non-saturating logistic loss, with an R1 penalty on real images for the
    discriminator (lazily, every ``r1_every`` steps, as in StyleGAN2);
  - L_3dlm: the frozen teacher's 68 3D landmarks on the output I versus on I_hq;
  - L_mesh: shape and colour of the module's mesh versus the teacher's on I_hq, averaged over
    all vertices.

Ablations: ``fusion="lq_only"`` (variant A) and ``fusion="sum"`` (variant B) change the
generator; ``mesh_losses=False`` with ``train_shape_prior=False`` and a separately fine-tuned
regressor in ``shape_prior_ckpt`` is variant C.

Images enter as ``(B, 3, S, S)`` in [0, 1] (the data modules' convention) and are mapped to
the network's [-1, 1] here.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from sgpn import camera, coefficients
from sgpn.discriminator import Discriminator
from sgpn.face_model import FaceModel, load_face_model
from sgpn.generator import FeatureInjection, SGPNGenerator, get_config
from sgpn.metrics import pixel_metrics, teacher_nme, vertex_error
from sgpn.regressor import CoefficientRegressor
from sgpn.shape_prior import ShapePrior

# The frozen teacher and face model are in eval mode on purpose; Lightning warns about any.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
# Lightning's pytree helper calls an API that this torch release deprecates (not the kit's code).
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")

#: Where regressor weights sit inside the kit's Lightning checkpoints.
REGRESSOR_PREFIXES = ("prior.regressor.", "shape_prior.regressor.")
#: D3DFR's loss weights (photometric, landmarks, coefficient regulariser, lighting).
D3DFR_WEIGHTS = {"photo": 1.92, "landmark": 1.6e-3, "reg": 3.0e-4, "gamma": 10.0}
#: D3DFR's regulariser weights for identity, expression and texture coefficients.
D3DFR_REG = {"id": 1.0, "exp": 0.8, "tex": 1.7e-2}
#: Perceptual-term choices; "auto" picks VGG-16 when its weights are on disk.
PERCEPTUAL_TERMS = ("auto", "vgg16", "feature_matching", "none")
VGG16_FILE = "vgg16-397923af.pth"


# ----------------------------------------------------------------------------------------------
# Conversions and checks
# ----------------------------------------------------------------------------------------------


def to_network(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] images to the network's [-1, 1]."""
    return image * 2 - 1


def to_image(network_output: torch.Tensor) -> torch.Tensor:
    """Network output to [0, 1] images (the network's output is not bounded: clamp)."""
    return ((network_output + 1) / 2).clamp(0, 1)


def check_images(batch: Mapping[str, Any], key: str, size: int | None = None) -> torch.Tensor:
    """``batch[key]`` as a finite ``(B, 3, S, S)`` float tensor in [0, 1], or a clear error."""
    if key not in batch:
        raise KeyError(f"the batch has no {key!r} images (it has {sorted(batch)}); "
                       f"use sgpn.data.FaceDataModule, which adds the degraded 'lq'")
    images = batch[key]
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError(f"batch[{key!r}] must be a float tensor, got {getattr(images, 'dtype', type(images))}")
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"batch[{key!r}] must have shape (B, 3, S, S), got {tuple(images.shape)}")
    if size is not None and images.shape[-1] != size:
        raise ValueError(f"batch[{key!r}] is {images.shape[-1]} px but the model works at {size} px; "
                         f"set the data module's size to {size}")
    if not torch.isfinite(images).all():
        raise ValueError(f"batch[{key!r}] contains NaN or Inf")
    low, high = images.min().item(), images.max().item()
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(f"batch[{key!r}] must hold values in [0, 1], got [{low:.3f}, {high:.3f}]")
    return images


def exclude_from_checkpoints(module: nn.Module) -> nn.Module:
    """Re-register every buffer of ``module`` as non-persistent.

    The face model's bases (tens of MB) are rebuilt from code or the BFM file, so they do not
    belong in training checkpoints; the module's ``face_model`` hyper-parameter names them.
    """
    for submodule in module.modules():
        for name, buffer in list(submodule.named_buffers(recurse=False)):
            submodule.register_buffer(name, buffer, persistent=False)
    return module


# ----------------------------------------------------------------------------------------------
# Geometry: landmarks, mesh loss, errors
# ----------------------------------------------------------------------------------------------


def landmarks_3d(face_model: FaceModel, coeffs: torch.Tensor) -> torch.Tensor:
    """The 68 posed 3D landmarks ``(B, 68, 3)`` in camera space, computed from the basis rows
    of the landmark vertices only (the same numbers as ``face_model(coeffs).landmarks_3d``,
    without building the whole mesh)."""
    parts = coefficients.split(coeffs)
    rows = (face_model.landmark_index[:, None] * 3
            + torch.arange(3, device=coeffs.device)).reshape(-1)
    shape = (face_model.mean_shape[rows] + parts.id @ face_model.id_basis[rows].T
             + parts.exp @ face_model.exp_basis[rows].T).reshape(coeffs.shape[0], -1, 3)
    rotation = FaceModel.rotation_matrix(parts.angles)
    return camera.to_camera(shape @ rotation + parts.trans[:, None, :])


def vertex_gram(basis: torch.Tensor) -> torch.Tensor:
    """``B^T B / N`` for a ``(3N, K)`` basis: with it, the mean over the N vertices of the
    squared change that coefficients ``d`` make is ``d^T G d`` (no mesh needs building)."""
    basis = basis.double()
    return (basis.T @ basis / (basis.shape[0] // 3)).float()


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
        return camera.project(landmarks_3d(self.face_model, coeffs), self.frame_size)

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
        import torchvision

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


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------


def read_regressor_checkpoint(path: Path):
    """The contents of a regressor checkpoint file, or a clear error when it is missing."""
    if not path.is_file():
        raise FileNotFoundError(f"regressor checkpoint not found: {path}. `make shape-prior` trains the "
                                f"kit's teacher (configs/teacher_tiny.yaml) and LQ regressor")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_regressor_weights(regressor: CoefficientRegressor, path: str | os.PathLike) -> CoefficientRegressor:
    """Load a regressor from a kit checkpoint (teacher or SGPN, Lightning format) or from a
    D3DFR / SGPN-release regressor file, strictly."""
    from sgpn.weights import load_strict

    path = Path(path)
    data = read_regressor_checkpoint(path)
    state = data.get("state_dict") if isinstance(data, Mapping) else None
    if isinstance(state, Mapping):
        for prefix in REGRESSOR_PREFIXES:
            found = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if found:
                load_strict(regressor, found, f"{path} ({prefix}*)")
                return regressor
    return regressor.load_checkpoint(path)


#: What a compact export leaves out of an SGPN checkpoint: the discriminator (only training
#: needs it) and the frozen teacher (rebuilt from ``teacher_ckpt`` when loading).
COMPACT_DROPS = ("discriminator.", "teacher.")


#: Where an export records the run's training wall time (from the
#: :class:`~sgpn.callbacks.TrainingBudget` callback of the kit's configs; it counts across resumes).
TRAINING_MINUTES = "training_minutes"


def training_minutes(path: str | os.PathLike) -> float | None:
    """The training wall time an exported checkpoint records, or ``None`` if it has none."""
    return torch.load(path, map_location="cpu", weights_only=True).get(TRAINING_MINUTES)


def export_checkpoint(source: str | os.PathLike, target: str | os.PathLike, compact: bool = False) -> Path:
    """Write a small copy of a Lightning checkpoint for sharing: weights and hyper-parameters
    only (no optimiser, loop or callback state). It loads with ``load_from_checkpoint`` and
    ``sgpn restore``, but cannot resume training.

    A :class:`~sgpn.callbacks.TrainingBudget` callback's time is kept as ``training_minutes``.
    Teacher modules leave out the frozen teacher of an LQ fine-tune (the file ``teacher_ckpt``
    names holds it): :func:`load_shape_prior` loads the regressor.

    ``compact`` (SGPN checkpoints): also leave out the discriminator and the frozen teacher and
    store the weights as float16, about a quarter of the size; :func:`load_sgpn` loads it (the
    teacher comes back from the checkpoint named by ``teacher_ckpt``). The kit commits its tiny
    models this way.
    """
    keep = ("state_dict", "hyper_parameters", "hparams_name", "epoch", "global_step",
            "pytorch-lightning_version", TRAINING_MINUTES)
    data = torch.load(source, map_location="cpu", weights_only=True)
    missing = [k for k in ("state_dict", "hyper_parameters") if k not in data]
    if missing:
        raise ValueError(f"{source} is not a Lightning checkpoint of the kit: it lacks {missing}")
    small = {k: data[k] for k in keep if k in data}
    if any(k.startswith("prior.") for k in data["state_dict"]):
        # a teacher module: a frozen teacher inside it (LQ fine-tuning) is its own checkpoint
        small["state_dict"] = {k: v for k, v in data["state_dict"].items() if not k.startswith("teacher.")}
    timer = data.get("callbacks", {}).get("TrainingBudget")
    if timer is not None:
        small[TRAINING_MINUTES] = timer["time_elapsed"]["train"] / 60
    if compact:
        state = data["state_dict"]
        if not any(k.startswith("generator.") for k in state):
            raise ValueError(f"{source}: only SGPN checkpoints have a compact form")
        small["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in state.items()
                               if not k.startswith(COMPACT_DROPS)}
        small["sgpn_compact"] = {"dropped": list(COMPACT_DROPS), "dtype": "float16"}
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(small, target)
    return target


# ----------------------------------------------------------------------------------------------
# Shared pieces of the two modules
# ----------------------------------------------------------------------------------------------


def build_prior(face_model: FaceModel, regressor: Mapping | None, alignment: str) -> ShapePrior:
    """A shape prior whose regressor is built from ``regressor`` (backbone, input_size)."""
    return ShapePrior(regressor=CoefficientRegressor(**dict(regressor or {})),
                      face_model=face_model, alignment=alignment)


def frozen(module: nn.Module) -> nn.Module:
    return module.eval().requires_grad_(False)


class ImageMetrics(nn.Module):
    """PSNR and SSIM (:func:`~sgpn.metrics.pixel_metrics`) of the output and of the LQ input."""

    def __init__(self):
        super().__init__()
        self.psnr, self.ssim = pixel_metrics()
        self.psnr_lq, self.ssim_lq = pixel_metrics()

    def update(self, output: torch.Tensor, lq: torch.Tensor, hq: torch.Tensor) -> dict:
        self.psnr.update(output, hq)
        self.ssim.update(output, hq)
        self.psnr_lq.update(lq, hq)
        self.ssim_lq.update(lq, hq)
        return {"psnr": self.psnr, "ssim": self.ssim, "psnr_lq": self.psnr_lq, "ssim_lq": self.ssim_lq}


# ----------------------------------------------------------------------------------------------
# Teacher (D3DFR's role)
# ----------------------------------------------------------------------------------------------


class TeacherModule(L.LightningModule):
    """A coefficient regressor trained on faces: D3DFR's role in SGPN.

    Losses (each switched off by a zero weight or by missing data):

    - ``coeff_weight``: :class:`FaceSpaceLoss` to the ground-truth coefficients (synthetic
      data): shape, albedo, lighting and projected landmarks, each normalised;
    - ``teacher_weight``: the same loss to a frozen ``teacher_ckpt``'s prediction on the HQ
      face (fine-tuning on LQ faces, the paper's recipe: no ground truth needed);
    - ``landmark_weight``: D3DFR's 68-landmark loss against the data's landmarks;
    - ``photo_weight``: D3DFR's photometric loss on the rendered skin region (minus occluders
      where the data marks them);
    - ``reg_weight`` / ``gamma_weight``: D3DFR's coefficient and lighting regularisers.

    D3DFR's weights (landmarks 1.6e-3 next to photometric 1.92) are for faces without labels;
    they are relative to the photometric term and mean little without it.
    ``init_ckpt`` starts the regressor from a kit checkpoint or a D3DFR file.
    ``lr_decay="cosine"`` anneals the learning rate to 0 over the run.
    """

    def __init__(self, regressor: dict | None = None, alignment: str = "resize",
                 face_model: str | None = None, train_on: str = "hq", lr: float = 1e-3,
                 weight_decay: float = 0.0, coeff_weight: float = 1.0, teacher_weight: float = 1.0,
                 landmark_weight: float = D3DFR_WEIGHTS["landmark"],
                 photo_weight: float = D3DFR_WEIGHTS["photo"], reg_weight: float = D3DFR_WEIGHTS["reg"],
                 gamma_weight: float = D3DFR_WEIGHTS["gamma"], init_ckpt: str | None = None,
                 teacher_ckpt: str | None = None, lr_decay: str | None = None):
        super().__init__()
        if train_on not in ("hq", "lq"):
            raise ValueError(f"train_on must be 'hq' or 'lq', got {train_on!r}")
        if lr_decay not in (None, "cosine"):
            raise ValueError(f"lr_decay must be None or 'cosine', got {lr_decay!r}")
        if train_on == "lq" and (teacher_ckpt is None or teacher_weight == 0) and coeff_weight == 0:
            raise ValueError("fine-tuning on LQ needs a teacher_ckpt (with teacher_weight > 0) or "
                             "ground-truth coefficients (coeff_weight > 0)")
        self.save_hyperparameters()
        self.face_model = exclude_from_checkpoints(load_face_model(face_model))
        self.prior = build_prior(self.face_model, regressor, alignment)
        self.teacher = frozen(build_prior(self.face_model, regressor, alignment)) if teacher_ckpt else None
        self.face_space_loss = FaceSpaceLoss(self.face_model, self.frame_size)
        self.register_buffer("skin", self.face_model.skin_mask.float()[None, :, None].expand(1, -1, 3).clone(),
                             persistent=False)

    @property
    def frame_size(self) -> int:
        return self.prior.frame_size

    def setup(self, stage: str) -> None:
        if stage != "fit" or getattr(self.trainer, "ckpt_path", None):
            return  # resuming: the checkpoint holds the weights
        if self.hparams.init_ckpt:
            load_regressor_weights(self.prior.regressor, self.hparams.init_ckpt)
        if self.teacher is not None:
            load_regressor_weights(self.teacher.regressor, self.hparams.teacher_ckpt)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def predict_coefficients(self, image: torch.Tensor, prior: ShapePrior | None = None) -> torch.Tensor:
        """Coefficients for ``[0, 1]`` images in the crop frame."""
        prior = prior or self.prior
        return prior.regressor(prior.to_regressor_frame(to_network(image)))

    def losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        hq = check_images(batch, "hq")
        image = hq if self.hparams.train_on == "hq" else check_images(batch, "lq", hq.shape[-1])
        hp, prior, size = self.hparams, self.prior, hq.shape[-1]
        framed = prior.to_regressor_frame(to_network(image))
        coeffs = prior.regressor(framed)
        terms: dict[str, torch.Tensor] = {}
        if hp.coeff_weight and "coeffs" in batch:
            for name, value in self.face_space_loss(coeffs, batch["coeffs"]).items():
                terms[name] = hp.coeff_weight * value
        if hp.landmark_weight and "landmarks" in batch:
            predicted = camera.project(landmarks_3d(self.face_model, coeffs), self.frame_size)
            target = prior.points_to_frame(batch["landmarks"], size)
            terms["landmark"] = hp.landmark_weight * landmark_loss_2d(predicted, target, self.frame_size)
        if hp.photo_weight:
            terms["photo"] = hp.photo_weight * self._photometric(framed, coeffs, batch)
        if hp.reg_weight or hp.gamma_weight:
            reg, gamma = coefficient_regulariser(coeffs)
            terms["reg"] = hp.reg_weight * reg + hp.gamma_weight * gamma
        if self.teacher is not None and hp.teacher_weight:
            with torch.no_grad():
                target = self.predict_coefficients(hq, self.teacher)
            for name, value in self.face_space_loss(coeffs, target).items():
                terms[f"teacher_{name}"] = hp.teacher_weight * value
        if not terms:
            raise ValueError("no teacher loss is active: every weight is zero or the batch lacks "
                             "the data it needs (coeffs, landmarks)")
        terms["total"] = sum(terms.values())
        return terms

    def _photometric(self, framed: torch.Tensor, coeffs: torch.Tensor, batch) -> torch.Tensor:
        """Render in the regressor's frame; compare on rendered skin, minus marked occluders."""
        face = self.face_model(coeffs, self.frame_size)
        renderer = self.prior.renderer
        rendered = renderer(face, self.face_model.faces)
        skin = renderer(face._replace(colors=self.skin.expand(len(coeffs), -1, -1)),
                        self.face_model.faces).image[:, :1]
        mask = rendered.mask * skin
        if "occluder_mask" in batch:
            mask = mask * (1 - self.prior.warp_to_frame(batch["occluder_mask"].float()))
        return photometric_loss(rendered.image, framed, mask.detach())

    def training_step(self, batch, batch_idx):
        terms = self.losses(batch)
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()},
                      prog_bar=False, batch_size=len(batch["hq"]))
        self.log("loss", terms["total"].detach(), prog_bar=True, logger=False)
        return terms["total"]

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def _evaluate(self, batch, split: str):
        terms = self.losses(batch)
        batch_size = len(batch["hq"])
        self.log(f"{split}/loss", terms["total"], batch_size=batch_size, sync_dist=True)
        if "coeffs" in batch:
            errors = self.geometry_errors(batch)
            for name, values in errors.items():
                self.log(f"{split}/{name}", values.mean(), batch_size=batch_size, sync_dist=True,
                         prog_bar=name == "nme")

    @torch.no_grad()
    def geometry_errors(self, batch: Mapping[str, Any], image: torch.Tensor | None = None) -> dict:
        """Per image, against the batch's ground truth: the unposed vertex error and the NME of
        the 68 projected landmarks, for ``image`` (default: the images it trains on)."""
        if image is None:
            image = batch["hq" if self.hparams.train_on == "hq" else "lq"]
        errors = {"vertex_error": vertex_error(self.face_model, self.predict_coefficients(image),
                                               batch["coeffs"])}
        if "landmarks" in batch:
            errors["nme"] = teacher_nme(self.prior, image, batch["landmarks"])
        return errors

    @torch.no_grad()
    def preview(self, batch: Mapping[str, Any], count: int = 4) -> dict[str, dict[str, torch.Tensor]]:
        """Rows of ``[0, 1]`` images for the image-logging callback: input and render."""
        key = "hq" if self.hparams.train_on == "hq" else "lq"
        image = batch[key][:count]
        out = self.prior(to_network(image))
        overlay = torch.where(out.mask > 0.5, to_image(out.image), image)
        return {"rows": {"input": image, "render": to_image(out.image), "overlay": overlay}, "masks": {}}

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.prior.regressor.parameters(), lr=self.hparams.lr,
                                     weight_decay=self.hparams.weight_decay)
        if self.hparams.lr_decay is None:
            return optimizer
        steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(steps):
            raise ValueError("lr_decay='cosine' needs a run of known length: set trainer.max_epochs "
                             "or trainer.max_steps")
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, int(steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


# ----------------------------------------------------------------------------------------------
# SGPN
# ----------------------------------------------------------------------------------------------


class Restored(NamedTuple):
    """What :meth:`SGPNModule.restore` returns; images in [0, 1]."""

    output: torch.Tensor  # (B, 3, S, S) restored face
    d3d: torch.Tensor  # (B, 3, S, S) the rendered shape prior I_3d
    coeffs: torch.Tensor  # (B, 257) z_3d
    masks: dict  # {(resolution, block): (B, C, r, r)} AFFB masks (empty without AFFB)


class SGPNModule(L.LightningModule):
    """SGPN trained end to end: generator, discriminator and shape restoration module.

    ``generator`` names a :data:`sgpn.generator.CONFIGS` entry or gives a config's fields;
    ``fusion`` selects the full model or variants A/B. ``regressor`` gives the shape prior's
    backbone and input size, which must match the teacher checkpoint's.
    ``lambda_l1`` and ``lambda_perceptual`` weigh the two parts of L_rec (the paper gives
    only λ_adv, λ_lm and λ_vt, relative to L_rec). ``feature_scale_init``: the starting value
    of the scalar s that lets F_lq / F_3d into the decoder. The release's 0 starts as a plain
    StyleGAN2 decoder that ignores the input until s grows; 1 lets the features in from the
    first step, which a run of minutes needs.
    ``lr_decay="cosine"`` anneals both learning rates to 0 over the run (its epochs, or
    ``max_steps``); the paper keeps them constant (``None``).
    """

    def __init__(self, generator: str | dict = "tiny", fusion: str = "affb",
                 regressor: dict | None = None, alignment: str = "resize",
                 face_model: str | None = None, teacher_ckpt: str | None = None,
                 shape_prior_ckpt: str | None = None, train_shape_prior: bool = True,
                 mesh_losses: bool = True, lr: float = 2e-3, d_lr: float | None = None,
                 shape_prior_lr: float = 1e-4, betas: tuple[float, float] = (0.0, 0.99),
                 lambda_adv: float = 1.0, lambda_lm: float = 100.0, lambda_mesh: float = 100.0,
                 perceptual: str = "auto", lambda_l1: float = 1.0, lambda_perceptual: float = 1.0,
                 r1_gamma: float = 10.0, r1_every: int = 16, feature_scale_init: float = 0.0,
                 lr_decay: str | None = None):
        super().__init__()
        if lr_decay not in (None, "cosine"):
            raise ValueError(f"lr_decay must be None or 'cosine', got {lr_decay!r}")
        if mesh_losses and teacher_ckpt is None:
            raise ValueError("SGPN's mesh losses (L_3dlm, L_mesh) need a frozen teacher: set "
                             "teacher_ckpt to a teacher or D3DFR checkpoint (make checkpoints writes "
                             "kit_checkpoints/teacher_tiny.ckpt), or set mesh_losses=False (variant C)")
        if r1_every < 1:
            raise ValueError(f"r1_every must be >= 1, got {r1_every}")
        resolve_perceptual(perceptual)  # fail early on a bad choice
        self.save_hyperparameters()
        self.automatic_optimization = False
        config = get_config(generator, fusion=fusion)
        self.generator = SGPNGenerator(config)
        with torch.no_grad():  # the learned scalar s of every feature injection
            for module in self.generator.modules():
                if isinstance(module, FeatureInjection):
                    module.weight.fill_(feature_scale_init)
        self.discriminator = Discriminator.for_generator(config)
        self.face_model = exclude_from_checkpoints(load_face_model(face_model))
        self.shape_prior = build_prior(self.face_model, regressor, alignment)
        self.teacher = frozen(build_prior(self.face_model, regressor, alignment))
        self.mesh_loss = MeshLoss(self.face_model)
        self.val_metrics = ImageMetrics()
        self.test_metrics = ImageMetrics()
        self.register_buffer("iterations", torch.zeros((), dtype=torch.long))
        self.perceptual_term: str | None = None
        self.perceptual: nn.Module | None = None
        if not train_shape_prior:
            frozen(self.shape_prior)

    @property
    def size(self) -> int:
        return self.generator.size

    # -- set-up --------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        self.perceptual_term = resolve_perceptual(self.hparams.perceptual)
        if self.perceptual_term == "vgg16" and self.perceptual is None:
            self.perceptual = VGGPerceptual(vgg16_weights_file())
        rank_zero_info(f"SGPN reconstruction loss: L1 + {self.perceptual_term} "
                       f"(perceptual='{self.hparams.perceptual}')")
        if getattr(self.trainer, "ckpt_path", None):
            return  # resuming: the checkpoint holds every network, teacher included
        hp = self.hparams
        if hp.teacher_ckpt:
            load_regressor_weights(self.teacher.regressor, hp.teacher_ckpt)
        init = hp.shape_prior_ckpt or hp.teacher_ckpt
        if init:
            load_regressor_weights(self.shape_prior.regressor, init)

    def on_fit_start(self) -> None:
        if self.logger is not None:
            self.logger.log_hyperparams({"reconstruction_term": f"l1+{self.perceptual_term}"})

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        if not self.hparams.train_shape_prior:
            self.shape_prior.eval()
        return self

    def configure_optimizers(self):
        hp = self.hparams
        groups = [{"params": list(self.generator.parameters()), "lr": hp.lr}]
        if hp.train_shape_prior:
            groups.append({"params": list(self.shape_prior.regressor.parameters()), "lr": hp.shape_prior_lr})
        betas = tuple(hp.betas)
        opt_g = torch.optim.Adam(groups, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp.d_lr or hp.lr, betas=betas)
        if hp.lr_decay is None:
            return [opt_g, opt_d]
        iterations = self.planned_iterations()
        schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(o, iterations) for o in (opt_g, opt_d)]
        return [opt_g, opt_d], schedulers

    def planned_iterations(self) -> int:
        """Iterations the trainer will run: its epochs' batches, or ``max_steps`` / 2 when that
        comes first (Lightning counts each optimiser's step, two per iteration here)."""
        trainer = self.trainer
        iterations = trainer.estimated_stepping_batches  # also sets up the training loader
        if trainer.max_steps > 0:
            by_epochs = (trainer.num_training_batches * trainer.max_epochs
                         if trainer.max_epochs is not None and trainer.max_epochs > 0 else math.inf)
            iterations = min(math.ceil(trainer.max_steps / 2), by_epochs)
        if not math.isfinite(iterations):
            raise ValueError("lr_decay='cosine' needs a run of known length: set trainer.max_epochs "
                             "(with a finite data loader) or trainer.max_steps")
        return int(iterations)

    # -- the network ---------------------------------------------------------------------------

    def forward(self, lq: torch.Tensor):
        """``[-1, 1]`` LQ crops -> (output in [-1, 1], shape prior output, AFFB masks)."""
        prior = self.shape_prior(lq)
        output, masks = self.generator(lq, prior.image, prior.coeffs, return_masks=True)
        return output, prior, masks

    @torch.no_grad()
    def restore(self, lq: torch.Tensor) -> Restored:
        """Restore ``[0, 1]`` LQ crops (no gradients, current train/eval mode)."""
        output, prior, masks = self(to_network(lq))
        return Restored(to_image(output), to_image(prior.image), prior.coeffs, masks)

    def teacher_coefficients(self, image: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's coefficients for ``[-1, 1]`` images (gradients reach the image)."""
        return self.teacher.regressor(self.teacher.to_regressor_frame(image.clamp(-1, 1)))

    # -- losses --------------------------------------------------------------------------------

    def discriminator_loss(self, hq: torch.Tensor, fake: torch.Tensor, r1: bool) -> dict:
        """Non-saturating logistic loss; every ``r1_every`` steps the R1 penalty on real images,
        scaled by ``r1_every`` (StyleGAN2's lazy regularisation)."""
        hp = self.hparams
        real = hq.detach().requires_grad_(r1)
        real_logit = self.discriminator(real)
        fake_logit = self.discriminator(fake.detach())
        terms = {"d_loss": F.softplus(fake_logit).mean() + F.softplus(-real_logit).mean()}
        if r1:
            (grad,) = torch.autograd.grad(real_logit.sum(), real, create_graph=True)
            terms["r1"] = hp.r1_gamma / 2 * grad.pow(2).flatten(1).sum(1).mean() * hp.r1_every
        terms["d_total"] = sum(terms.values())
        terms["real_score"] = real_logit.detach().mean()
        terms["fake_score"] = fake_logit.detach().mean()
        return terms

    def generator_losses(self, hq: torch.Tensor, output: torch.Tensor, prior) -> dict:
        """L_rec + λ_adv L_adv + λ_lm L_3dlm + λ_vt L_mesh, with every term for logging."""
        hp = self.hparams
        terms: dict[str, torch.Tensor] = {"l1": hp.lambda_l1 * F.l1_loss(output, hq)}
        fake_logit, fake_features = self.discriminator(output, return_features=True)
        if self.perceptual_term == "feature_matching":
            with torch.no_grad():
                _, real_features = self.discriminator(hq, return_features=True)
            terms["feature_matching"] = hp.lambda_perceptual * feature_matching_loss(fake_features, real_features)
        elif self.perceptual_term == "vgg16":
            terms["perceptual"] = hp.lambda_perceptual * self.perceptual(output, hq)
        terms["adv"] = hp.lambda_adv * F.softplus(-fake_logit).mean()
        if hp.mesh_losses:
            with torch.no_grad():
                target = self.teacher_coefficients(hq)
                target_face = self.face_model(target, self.shape_prior.frame_size)
            predicted = landmarks_3d(self.face_model, self.teacher_coefficients(output))
            terms["3dlm"] = hp.lambda_lm * landmark_loss_3d(predicted, target_face.landmarks_3d)
            terms["mesh"] = hp.lambda_mesh * self.mesh_loss(prior.coeffs, prior.face.colors, target,
                                                            target_face.colors)
        terms["g_total"] = sum(terms.values())
        return terms

    # -- steps ---------------------------------------------------------------------------------

    def _pair(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        hq = check_images(batch, "hq", self.size)
        lq = check_images(batch, "lq", self.size)
        return to_network(hq), to_network(lq)

    def training_step(self, batch, batch_idx):
        opt_g, opt_d = self.optimizers()
        hq, lq = self._pair(batch)
        output, prior, _ = self(lq)

        r1 = int(self.iterations) % self.hparams.r1_every == 0
        with self.toggled_optimizer(opt_d):
            d_terms = self.discriminator_loss(hq, output, r1)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_terms["d_total"])
            opt_d.step()

        with self.toggled_optimizer(opt_g):
            g_terms = self.generator_losses(hq, output, prior)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_terms["g_total"])
            opt_g.step()
        self.iterations += 1
        for scheduler in self.lr_schedulers() or []:
            scheduler.step()

        logs = {f"train/{k}": v.detach() for k, v in {**d_terms, **g_terms}.items()}
        self.log_dict(logs, batch_size=len(hq))
        self.log_dict({"l1": g_terms["l1"].detach(), "adv": g_terms["adv"].detach(),
                       "d": d_terms["d_loss"].detach()}, prog_bar=True, logger=False, batch_size=len(hq))

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_metrics, "test")

    def _evaluate(self, batch, metrics: ImageMetrics, split: str):
        hq = check_images(batch, "hq", self.size)
        lq = check_images(batch, "lq", self.size)
        restored = self.restore(lq)
        values = metrics.update(restored.output, lq, hq)
        for name, metric in values.items():
            self.log(f"{split}/{name}", metric, batch_size=len(hq), prog_bar=name in ("psnr", "ssim"))

    @torch.no_grad()
    def preview(self, batch: Mapping[str, Any], count: int = 4) -> dict[str, dict[str, torch.Tensor]]:
        """Rows of ``[0, 1]`` images for the image-logging callback (LQ, I_3d, output, GT) and
        the channel-mean AFFB masks of the second block at each resolution."""
        lq, hq = batch["lq"][:count], batch["hq"][:count]
        restored = self.restore(lq)
        masks = {f"M {res}px": mask.mean(1, keepdim=True)
                 for (res, block), mask in sorted(restored.masks.items()) if block == 1 and res >= 16}
        return {"rows": {"LQ": lq, "I_3d": restored.d3d, "output": restored.output, "GT": hq},
                "masks": masks}


def load_sgpn(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> SGPNModule:
    """An :class:`SGPNModule` from a kit checkpoint (full, exported or compact), in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SGPN checkpoint not found: {path}")
    data = torch.load(path, map_location="cpu", weights_only=True)
    state = data.get("state_dict", {}) if isinstance(data, Mapping) else {}
    if not any(k.startswith("generator.") for k in state):
        kind = "a teacher checkpoint" if any(k.startswith("prior.") for k in state) else "not a kit SGPN checkpoint"
        raise ValueError(f"{path} is {kind}: it holds no generator weights")
    if "sgpn_compact" not in data:
        module = SGPNModule.load_from_checkpoint(path, map_location=map_location, weights_only=True)
        return module.eval()
    module = SGPNModule(**{k: v for k, v in data["hyper_parameters"].items() if not k.startswith("_")})
    expected = {k for k in module.state_dict() if not k.startswith(COMPACT_DROPS)}
    if set(state) != expected:
        raise KeyError(f"{path} does not match SGPNModule: missing {sorted(expected - set(state))[:5]}, "
                       f"unexpected {sorted(set(state) - expected)[:5]}")
    module.load_state_dict(state, strict=False)  # float16 values are copied into float32
    teacher = module.hparams.teacher_ckpt
    if teacher:
        load_regressor_weights(module.teacher.regressor, resolve_kit_path(teacher, path))
    return module.to(map_location).eval()


def load_shape_prior(path: str | os.PathLike, face_model: FaceModel | None = None) -> ShapePrior:
    """The :class:`ShapePrior` of a kit teacher or LQ-regressor checkpoint, in eval mode
    (the regressor its hyper-parameters describe, with its weights; no training state)."""
    path = Path(path)
    data = read_regressor_checkpoint(path)
    hparams = data.get("hyper_parameters") if isinstance(data, Mapping) else None
    if not isinstance(hparams, Mapping) or "regressor" not in hparams:
        raise ValueError(f"{path} is not a kit teacher checkpoint (no regressor hyper-parameters)")
    face_model = face_model if face_model is not None else load_face_model(hparams.get("face_model"))
    prior = build_prior(face_model, hparams["regressor"], hparams.get("alignment", "resize"))
    load_regressor_weights(prior.regressor, path)
    return prior.eval()


def resolve_kit_path(name: str | os.PathLike, beside: Path) -> Path:
    """A path from a checkpoint's hyper-parameters: as given, else relative to the kit's root
    (configs name ``kit_checkpoints/...`` relative to it), else beside the checkpoint."""
    for candidate in (Path(name), Path(__file__).resolve().parents[1] / name, beside.parent / Path(name).name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{beside} needs its teacher {name}, which was not found (as given, in the kit, "
                            f"or beside the checkpoint)")
