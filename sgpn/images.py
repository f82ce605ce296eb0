"""The kit's image conventions and its one image check.

Images are ``(B, 3, H, W)`` float tensors in [0, 1] outside the networks (data modules,
metrics, display) and in [-1, 1] inside them (StyleGAN2's convention, kept by the release).
Every module that takes images checks them here, so a wrong shape, a NaN or an image in the
other range gets the same clear error everywhere.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

#: Slack on range checks: resampling can overshoot by a hair.
RANGE_TOLERANCE = 1e-3


def to_network(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] images to the network's [-1, 1]."""
    return image * 2 - 1


def to_image(network_output: torch.Tensor) -> torch.Tensor:
    """Network output to [0, 1] images (the network's output is not bounded: clamp)."""
    return ((network_output + 1) / 2).clamp(0, 1)


def check_images(images: torch.Tensor, name: str = "images", size: int | None = None, square: bool = False,
                 value_range: tuple[float, float] | None = (0.0, 1.0), tolerance: float = 0.0) -> torch.Tensor:
    """``images`` as a finite, non-empty ``(B, 3, H, W)`` float tensor, or an error that names
    the problem. ``size``: H and W must both equal it; ``square``: H must equal W;
    ``value_range``: the values must lie in it, give or take ``tolerance`` (``None``: any)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {images.dtype}")
    wanted = f"(B, 3, {size}, {size})" if size is not None else "(B, 3, S, S)" if square else "(B, 3, H, W)"
    if images.dim() != 4:
        raise ValueError(f"{name} must have shape {wanted}, got {tuple(images.shape)}")
    if images.shape[1] != 3:
        raise ValueError(f"{name} must have 3 colour channels (RGB), got {images.shape[1]}: shape {tuple(images.shape)}")
    if images.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(images.shape)}")
    if size is not None and tuple(images.shape[2:]) != (size, size):
        raise ValueError(f"{name} is {images.shape[2]} x {images.shape[3]} px but the model works at {size} x {size} "
                         f"px: shape {tuple(images.shape)}, expected {wanted}")
    if square and images.shape[2] != images.shape[3]:
        raise ValueError(f"{name} must be square, {wanted}, got {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or Inf")
    if value_range is not None:
        low, high = images.min().item(), images.max().item()
        if low < value_range[0] - tolerance or high > value_range[1] + tolerance:
            hint = (" (a [-1, 1] image? map it with (x + 1) / 2)" if value_range == (0.0, 1.0) and low < -0.1
                    else " (a [0, 1] image? map it with sgpn.images.to_network)" if value_range == (-1.0, 1.0)
                    and high > 1.1 else "")
            raise ValueError(f"{name} must hold values in [{value_range[0]:g}, {value_range[1]:g}], "
                             f"got [{low:.4g}, {high:.4g}]{hint}")
    return images


def batch_images(batch: Mapping[str, Any], key: str, size: int | None = None) -> torch.Tensor:
    """``batch[key]``: square ``(B, 3, S, S)`` images in [0, 1] (``size`` px when given), or a
    clear error, also when the batch lacks the key."""
    if key not in batch:
        raise KeyError(f"the batch has no {key!r} images (it has {sorted(batch)}); "
                       f"use sgpn.data.datamodule.FaceDataModule, which adds the degraded 'lq'")
    return check_images(batch[key], f"batch[{key!r}]", size=size, square=True, tolerance=RANGE_TOLERANCE)


def check_image_pair(output: torch.Tensor, target: torch.Tensor) -> None:
    """An output and its target: both valid [0, 1] images of the same shape, or a clear error."""
    check_images(output, "output")
    check_images(target, "target")
    if output.shape != target.shape:
        raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} differ in shape")
