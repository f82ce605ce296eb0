"""Faces in real photos: MTCNN (facenet-pytorch) boxes and five points.

The release detects with YOLOv5-face, whose weights must be downloaded; any detector that
gives the five points (eyes, nose tip, mouth corners) serves, and facenet-pytorch's wheel
ships MTCNN's P-, R- and O-Net weights, so nothing is fetched. Its metadata pins older torch,
numpy and Pillow releases than the kit's, but it runs with them: it is installed without its
dependencies (the Makefile's ``NO_DEPS_WHEELS``). With numpy 2 its results come back as
object arrays; :func:`detect_faces` turns them into tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

#: A face probability that separated the real faces from false detections on real photos.
FACE_THRESHOLD = 0.95
#: MTCNN's smallest face (its ``min_face_size``); a smaller photo cannot hold one.
MIN_FACE_SIZE = 20


@dataclass(frozen=True)
class DetectedFace:
    """One face: ``box`` (x0, y0, x1, y1), MTCNN's ``probability`` and the five ``points``
    ``(5, 2)`` (left eye, right eye, nose tip, left and right mouth corner, as seen), pixels."""

    box: torch.Tensor
    probability: float
    points: torch.Tensor


@lru_cache(maxsize=1)
def mtcnn():
    """The detector, built once (CPU, every face kept)."""
    from facenet_pytorch import MTCNN  # optional heavy dependency (installed --no-deps): only detection needs it

    return MTCNN(keep_all=True, min_face_size=MIN_FACE_SIZE, device="cpu")


def detect_faces(photo: torch.Tensor, threshold: float = FACE_THRESHOLD) -> list[DetectedFace]:
    """Faces in an RGB ``photo`` ``(3, H, W)`` in [0, 1], most probable first; those below
    ``threshold`` are dropped. A photo too small to hold a face raises ``ValueError``."""
    if photo.ndim != 3 or photo.shape[0] != 3:
        raise ValueError(f"a photo must be an RGB (3, H, W) tensor, got {tuple(photo.shape)}")
    height, width = photo.shape[-2:]
    if min(height, width) < MIN_FACE_SIZE:
        raise ValueError(f"the photo is {width}x{height} px: too small to hold a face (the detector "
                         f"needs at least {MIN_FACE_SIZE} px)")
    if not torch.isfinite(photo).all():
        raise ValueError("the photo contains NaN or Inf")
    array = (photo.clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    with torch.inference_mode():
        boxes, probabilities, points = mtcnn().detect(array, landmarks=True)
    if boxes is None:
        return []
    faces = [DetectedFace(torch.as_tensor(np.asarray(box, dtype=np.float64)), float(probability),
                          torch.as_tensor(np.asarray(five, dtype=np.float64)))
             for box, probability, five in zip(boxes, probabilities, points)]
    return sorted((f for f in faces if f.probability >= threshold), key=lambda f: -f.probability)
