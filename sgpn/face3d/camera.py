"""The D3DFR pinhole camera and its PyTorch3D twin.

D3DFR (and the official SGPN release) image a face through a perspective camera at distance 10
with focal length 1015 and principal point 112 on a 224 x 224 image. Camera space here is
D3DFR's: x right, y up, z the depth in front of the camera (a posed vertex with z becomes
10 - z). Any other square image size scales focal length and principal point together, which
keeps the field of view, 2 * atan(112 / 1015), unchanged.

Pixel coordinates follow the array convention: pixel (row i, column j) has its centre at
(x=j, y=i), so landmarks can be drawn straight over ``plt.imshow``.
"""

from __future__ import annotations

import math

import torch
from pytorch3d.renderer import FoVPerspectiveCameras, look_at_view_transform

CAMERA_DISTANCE = 10.0
FOCAL_224 = 1015.0
CENTER_224 = 112.0
FOV_RADIANS = 2.0 * math.atan(CENTER_224 / FOCAL_224)
FOV_DEGREES = math.degrees(FOV_RADIANS)


def to_camera(posed: torch.Tensor) -> torch.Tensor:
    """Posed model-space points (camera looking down -z from z=10) to D3DFR camera space."""
    return torch.cat([posed[..., :2], CAMERA_DISTANCE - posed[..., 2:]], dim=-1)


def to_world(camera_points: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_camera`: the frame PyTorch3D's look-at camera sees."""
    return to_camera(camera_points)


def focal_length(image_size: int) -> float:
    """Focal length in pixels for a square image of ``image_size``."""
    return FOCAL_224 * image_size / 224.0


def pixel_span(image_size: int) -> float:
    """How much of the face (model units) one pixel of an ``image_size`` crop spans, at the
    camera's distance."""
    return CAMERA_DISTANCE / focal_length(image_size)


def project(camera_points: torch.Tensor, image_size: int = 224) -> torch.Tensor:
    """Project camera-space points ``(..., 3)`` to pixel coordinates ``(..., 2)``.

    x grows to the right and y downwards (image rows); pixel centres sit at integers.
    """
    f = focal_length(image_size)
    c = image_size / 2.0 - 0.5
    z = camera_points[..., 2:3]
    x = c + f * camera_points[..., 0:1] / z
    y = c - f * camera_points[..., 1:2] / z
    return torch.cat([x, y], dim=-1)


def pytorch3d_cameras(batch_size: int = 1, device: torch.device | str = "cpu"):
    """PyTorch3D ``FoVPerspectiveCameras`` that see exactly what :func:`project` sees.

    Mirrors the official renderer: a look-at camera from distance 10 on the +z axis, with
    fov = 2 * atan(112 / 1015). Meshes must be given in :func:`to_world` coordinates.
    """
    R, T = look_at_view_transform(dist=CAMERA_DISTANCE, elev=0.0, azim=0.0)
    return FoVPerspectiveCameras(
        R=R.expand(batch_size, 3, 3),
        T=T.expand(batch_size, 3),
        fov=FOV_DEGREES,
        znear=5.0,
        zfar=15.0,
        device=device,
    )
