"""Faces in real photos: the 5-point similarity onto the release's 512 template, the warp
into an aligned crop, and the feathered paste-back of a restored crop into the photo.

The release aligns a detected face by a least-squares similarity (Umeyama, with scale) from
its five points (eyes, nose tip, mouth corners) onto a fixed template (the square-padded 96 x
112 template of :func:`sgpn.nets.shape_prior.template_points`), warps the photo with
it (bicubic) and, after restoration, blends the crop back through the inverse warp with a
blurred rectangle as the mask, so that no seam shows and every pixel away from the face is
left exactly as it was. Umeyama's closed form is a few lines; the warps and the blur are
kornia's.

Coordinates are pixels with the origin at the top-left corner of the top-left pixel's centre
(OpenCV's convention, which kornia's ``warp_affine`` follows with ``align_corners=True``).
"""

from __future__ import annotations

import torch
from kornia.filters import gaussian_blur2d
from kornia.geometry.transform import warp_affine

from sgpn.nets.shape_prior import invert_similarity, template_points

#: The release's paste-back mask in a 512 crop: a rectangle from pixel 26 to 486, blurred twice
#: with a Gaussian of sigma 4 (kernel 101); other crop sizes scale it.
MASK_MARGIN_512, MASK_SIGMA_512 = 26, 4.0


def similarity_matrix(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The ``(2, 3)`` similarity (rotation, uniform scale, translation; no reflection) that maps
    ``source`` points ``(N, 2)`` onto ``target`` in the least-squares sense (Umeyama 1991)."""
    source, target = torch.as_tensor(source, dtype=torch.float64), torch.as_tensor(target, dtype=torch.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 or len(source) < 2:
        raise ValueError(f"need matching (N >= 2, 2) point sets, got {tuple(source.shape)} and {tuple(target.shape)}")
    if not (torch.isfinite(source).all() and torch.isfinite(target).all()):
        raise ValueError("face points contain NaN or Inf")
    mean_s, mean_t = source.mean(0), target.mean(0)
    centred_s, centred_t = source - mean_s, target - mean_t
    variance = centred_s.pow(2).sum(1).mean()
    if variance <= 1e-12:
        raise ValueError("the face points coincide: no similarity can be fitted")
    u, singular, vh = torch.linalg.svd(centred_t.T @ centred_s / len(source))
    sign = torch.ones(2, dtype=torch.float64)
    if torch.det(u) * torch.det(vh) < 0:  # a reflection would fit better: take the best rotation
        sign[1] = -1
    rotation = u @ torch.diag(sign) @ vh
    scale = (singular * sign).sum() / variance
    translation = mean_t - scale * rotation @ mean_s
    return torch.cat([scale * rotation, translation[:, None]], 1)


def warp(image: torch.Tensor, matrix: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``image`` ``(C, H, W)`` warped by ``matrix`` (source to target pixels) into ``size``, zeros outside."""
    return warp_affine(image[None].float(), matrix[None].float(), size, mode=mode, padding_mode="zeros",
                       align_corners=True)[0]


def align(photo: torch.Tensor, points: torch.Tensor, size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """The aligned ``(3, size, size)`` crop of ``photo`` ``(3, H, W)`` in [0, 1] for a face's
    five ``points``, warped bicubically (and clamped to [0, 1], which bicubic overshoots), and
    the ``(2, 3)`` matrix from photo to crop pixels."""
    matrix = similarity_matrix(points, template_points(size))
    return warp(photo, matrix, (size, size), "bicubic").clamp(0, 1), matrix


def paste_mask(size: int) -> torch.Tensor:
    """The release's feathered paste-back mask for a ``size`` px crop, ``(1, size, size)``."""
    margin = round(MASK_MARGIN_512 * size / 512)
    sigma = MASK_SIGMA_512 * size / 512
    kernel = 2 * int(3 * sigma) + 1
    mask = torch.zeros(1, 1, size, size)
    mask[..., margin:size - margin, margin:size - margin] = 1
    for _ in range(2):
        mask = gaussian_blur2d(mask, (kernel, kernel), (sigma, sigma), border_type="constant")
    return mask[0]


def paste_back(photo: torch.Tensor, crop: torch.Tensor, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``photo`` ``(3, H, W)`` with the restored ``crop`` blended in through the inverse of
    ``matrix`` (photo to crop), and the blend's weight ``(1, H, W)``. Where the weight is 0,
    the photo's pixels are returned untouched."""
    size = crop.shape[-1]
    height, width = photo.shape[-2:]
    inverse = invert_similarity(matrix.double())
    weight = warp(paste_mask(size), inverse, (height, width), "bilinear").clamp(0, 1)
    restored = warp(crop, inverse, (height, width), "bicubic").clamp(0, 1)
    blended = torch.where(weight > 0, photo * (1 - weight) + restored * weight, photo)
    return blended, weight
