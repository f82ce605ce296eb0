"""``sgpn reconstruct``: the 257 coefficients of every face in a photo, fitted to it.

Each face MTCNN finds is aligned by its five points into D3DFR's frame (the release's template
crop, then D3DFR's crop of it: :func:`sgpn.nets.shape_prior.crop_to_frame_matrix`), drawn at
:data:`FIT_SIZE` px, and its coefficients are fitted there (:mod:`sgpn.face3d.fitting`; the faces
of one photo as one batch). The model's 68 landmarks are mapped back into the photo's pixels,
and the fitted render is blended over the photo for a look.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torchvision.utils import save_image
from tqdm.auto import tqdm

from sgpn.data.folder import READ_ERRORS, read_rgb
from sgpn.face3d.face_model import FaceModel
from sgpn.face3d.fitting import FitSettings, fit_coefficients
from sgpn.face3d.renderer import Renderer
from sgpn.nets.shape_prior import apply_similarity, crop_to_frame_matrix, invert_similarity, template_points
from sgpn.photo.alignment import similarity_matrix, warp
from sgpn.photo.detection import FACE_THRESHOLD, detect_faces
from sgpn.photo.restore import input_images, output_path

#: The size of D3DFR's frame the fit renders (its 224 frame at half size: enough for a face's
#: shape, and four times cheaper per step).
FIT_SIZE = 112
#: A single photo has time for a longer fit than a benchmark's batch.
PHOTO_FIT = FitSettings(steps=120, coarse_steps=40)
#: How much of the render shows in the ``_fit.png`` overlay.
OVERLAY_OPACITY = 0.6


@dataclass
class ReconstructedFace:
    """A face of a photo and its fit: ``box`` and ``points`` from the detector (photo pixels),
    the ``coeffs`` ``(257,)``, the model's 68 ``landmarks`` in photo pixels, the ``matrix`` from
    photo to fit frame, the fitted ``frame`` crop and its ``render`` and ``mask``."""

    box: torch.Tensor
    probability: float
    points: torch.Tensor
    coeffs: torch.Tensor
    landmarks: torch.Tensor
    matrix: torch.Tensor
    frame: torch.Tensor
    render: torch.Tensor
    mask: torch.Tensor
    fit_seconds: float

    def record(self) -> dict:
        """The face as ``sgpn reconstruct`` writes it to JSON."""
        def rounded(values: torch.Tensor, digits: int) -> list:
            return [round(float(v), digits) if v.ndim == 0 else rounded(v, digits) for v in values]

        return {"box": rounded(self.box, 2), "points_5": rounded(self.points, 2), "probability": round(self.probability, 5),
                "coefficients": rounded(self.coeffs, 6), "landmarks_68": rounded(self.landmarks, 2),
                "fit_seconds": round(self.fit_seconds, 2)}


def photo_to_frame(points: torch.Tensor, size: int = FIT_SIZE) -> torch.Tensor:
    """The ``(2, 3)`` similarity from photo pixels to D3DFR's frame at ``size`` for a face's five
    points: the release's template alignment (at 512) followed by D3DFR's crop of it."""
    to_crop = similarity_matrix(points, torch.as_tensor(template_points(512)))
    to_frame = crop_to_frame_matrix(512, size).double()
    return to_frame[:, :2] @ to_crop + torch.cat([torch.zeros(2, 2, dtype=torch.float64), to_frame[:, 2:]], 1)


def warp_into(photo: torch.Tensor, matrix: torch.Tensor, size: int) -> torch.Tensor:
    """The ``(3, size, size)`` crop of ``photo`` that ``matrix`` (photo to frame) frames."""
    return warp(photo, matrix, (size, size), "bilinear").clamp(0, 1)


def reconstruct_photo(face_model: FaceModel, photo: torch.Tensor, threshold: float = FACE_THRESHOLD,
                      settings: FitSettings = PHOTO_FIT,
                      on_step: Callable[[int, int], None] | None = None) -> list[ReconstructedFace]:
    """Every face of ``photo`` ``(3, H, W)`` in [0, 1] fitted (see the module docstring), most
    probable first; an empty list for a photo without a face."""
    faces = detect_faces(photo, threshold)
    if not faces:
        return []
    matrices = [photo_to_frame(face.points) for face in faces]
    frames = torch.stack([warp_into(photo, m, FIT_SIZE) for m in matrices])
    points = torch.stack([apply_similarity(m, face.points) for m, face in zip(matrices, faces)]).float()
    fitted = fit_coefficients(face_model, frames, points, settings=settings, on_step=on_step)
    with torch.no_grad():
        face = face_model(fitted.coeffs, FIT_SIZE)
        render = Renderer(FIT_SIZE)(face, face_model.faces)
    return [ReconstructedFace(f.box, f.probability, f.points, fitted.coeffs[i],
                              apply_similarity(invert_similarity(m), face.landmarks_2d[i]).float(), m, frames[i],
                              render.image[i].clamp(0, 1), render.mask[i], fitted.seconds / len(faces))
            for i, (f, m) in enumerate(zip(faces, matrices))]


def overlay(photo: torch.Tensor, faces: list[ReconstructedFace], opacity: float = OVERLAY_OPACITY) -> torch.Tensor:
    """The photo with each face's fitted render blended over it where the render covers."""
    result = photo.clone()
    size = tuple(photo.shape[-2:])
    for face in faces:
        back = invert_similarity(face.matrix)
        render, mask = warp(face.render, back, size, "bilinear"), warp(face.mask, back, size, "bilinear") * opacity
        result = result * (1 - mask) + render * mask
    return result.clamp(0, 1)


def reconstruct_photos(face_model: FaceModel, source: str | os.PathLike, output_dir: str | os.PathLike,
                       threshold: float = FACE_THRESHOLD, settings: FitSettings = PHOTO_FIT,
                       progress: bool = True) -> dict[str, list]:
    """``sgpn reconstruct``: ``OUT/<stem>.json`` and ``OUT/<stem>_fit.png`` for every photo under
    ``source`` with a face. Returns what was written, the photos without a face and the skipped
    files (unreadable or too small, with the reason)."""
    input_root, files = input_images(source)
    output_root = Path(output_dir)
    if input_root.resolve() == output_root.resolve():
        raise ValueError("the output folder must differ from the input folder")
    report: dict[str, list] = {"written": [], "no_face": [], "skipped": []}
    for path in tqdm(files, desc="fitting faces", unit="photo", disable=not progress):
        try:
            photo = read_rgb(path).to(torch.float32)
            faces = reconstruct_photo(face_model, photo, threshold, settings)
        except READ_ERRORS as err:
            report["skipped"].append((path, str(err)))
            tqdm.write(f"skipped {path}: {err}")
            continue
        if not faces:
            report["no_face"].append(path)
            tqdm.write(f"{path}: no face found")
            continue
        target = output_path(path, input_root, output_root).with_suffix(".json")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps([face.record() for face in faces]) + "\n")
        save_image(overlay(photo, faces), target.with_name(f"{target.stem}_fit.png"))
        report["written"].append(target)
        tqdm.write(f"{path}: {len(faces)} face(s) fitted in {sum(f.fit_seconds for f in faces):.1f} s -> {target}")
    return report
