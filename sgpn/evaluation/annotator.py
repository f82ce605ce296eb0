"""The fitted 68 landmarks on real photos, scored against an independent annotator.

The annotator is dlib's 68-point shape predictor, a cascade of regression trees trained on iBUG
300-W's annotations: it marks the points by the convention the kit's landmarks follow, and it
shares nothing with the fit (not the detector, not the five points, not the face model). dlib
comes built in the ``dlib-bin`` wheel and the predictor's weights in ``face-recognition-models``;
nothing is fetched. The predictor is given dlib's own face box (its HOG detector), the framing
it was trained on; a face that dlib's detector does not find is left out, and counted.

Scores are 300-W's NME: the mean point distance over the annotator's outer-eye-corner distance.
The baseline is what the detector's five points give alone: the mean face's 68 landmarks moved
onto them by the least-squares similarity.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
from torchvision.ops import box_iou
from tqdm.auto import tqdm

from sgpn.data.folder import READ_ERRORS, read_rgb
from sgpn.evaluation.metrics import landmark_nme
from sgpn.face3d import coefficients
from sgpn.face3d.face_model import FaceModel
from sgpn.face3d.fitting import FitSettings, five_points
from sgpn.nets.shape_prior import apply_similarity
from sgpn.photo.alignment import similarity_matrix
from sgpn.photo.reconstruct import PHOTO_FIT, reconstruct_photo
from sgpn.photo.restore import input_images

#: The packages that carry the annotator.
PACKAGES = "dlib-bin face-recognition-models"
#: The least overlap of dlib's box with the detector's for the two to be one face.
MATCH_IOU = 0.3
#: The iBUG 300-W jaw points (the outline); the other 51 are brows, nose, eyes and mouth.
JAW = slice(0, 17)


def predictor_path() -> Path:
    """dlib's 68-point predictor file, from the installed ``face-recognition-models`` (found
    without importing the package, whose ``__init__`` loads the deprecated ``pkg_resources``)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"the annotator needs dlib's 68-point predictor: pip install {PACKAGES}")
    path = Path(spec.origin).parent / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise FileNotFoundError(f"face-recognition-models is installed without its predictor: {path} is missing")
    return path


class Annotator:
    """dlib's HOG face detector and 68-point predictor."""

    def __init__(self, upsample: int = 1):
        try:
            import dlib  # optional heavy dependency (dlib-bin): only this check needs it
        except ImportError as err:
            raise ModuleNotFoundError(f"the annotator needs dlib: pip install {PACKAGES}") from err
        self.upsample = upsample
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(predictor_path()))

    def __call__(self, photo: torch.Tensor, boxes: torch.Tensor) -> list[torch.Tensor | None]:
        """For each box ``(N, 4)`` (x0, y0, x1, y1, photo pixels) of ``photo`` ``(3, H, W)`` in
        [0, 1], the annotator's 68 points ``(68, 2)`` on the dlib face that overlaps it most, or
        ``None`` where no dlib face overlaps it by :data:`MATCH_IOU`."""
        if photo.ndim != 3 or photo.shape[0] != 3:
            raise ValueError(f"photo must be (3, H, W), got {tuple(photo.shape)}")
        pixels = (photo.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        found = list(self.detector(pixels, self.upsample))
        if not found or not len(boxes):
            return [None] * len(boxes)
        dlib_boxes = torch.tensor([[r.left(), r.top(), r.right(), r.bottom()] for r in found], dtype=torch.float64)
        overlaps = box_iou(boxes.double().view(-1, 4), dlib_boxes)
        points = []
        for row in overlaps:
            best = int(row.argmax())
            if row[best] < MATCH_IOU:
                points.append(None)
                continue
            shape = self.predictor(pixels, found[best])
            points.append(torch.tensor([[p.x, p.y] for p in shape.parts()], dtype=torch.float64))
        return points


@torch.no_grad()
def five_point_landmarks(face_model: FaceModel, points: torch.Tensor) -> torch.Tensor:
    """The mean face's 68 landmarks ``(68, 2)`` moved onto five detector ``points`` ``(5, 2)`` by
    the least-squares similarity: what the five points say of the 68 without a fit."""
    mean = face_model.landmarks_2d(torch.zeros(1, coefficients.NUM_COEFFS), 224)[0].double()
    matrix = similarity_matrix(five_points(mean[None])[0], points.double())
    return apply_similarity(matrix, mean)


def jaw_offset(predicted: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """The mean offset ``(2,)`` from the predicted jaw points to the annotated ones, in the frame of
    the annotated eyes (x along the eye line, y down the face) over their distance."""
    eyes = annotated[45] - annotated[36]
    angle = math.atan2(float(eyes[1]), float(eyes[0]))
    cos, sin = math.cos(angle), math.sin(angle)
    to_eye_frame = torch.tensor([[cos, sin], [-sin, cos]], dtype=torch.float64)
    return ((annotated[JAW] - predicted[JAW]) @ to_eye_frame.T).mean(0) / eyes.norm()


def proportions(points: torch.Tensor) -> torch.Tensor:
    """Each face's ``(B, 68, 2)`` eye-to-mouth and mouth-to-chin distances ``(B, 2)`` over its
    outer-eye-corner distance (eyes and mouth at their centres, the chin at point 8): the
    proportions that decide where five points put the jaw."""
    eyes = (points[:, 36:42].mean(1) + points[:, 42:48].mean(1)) / 2
    mouth = (points[:, 48] + points[:, 54]) / 2
    scale = (points[:, 45] - points[:, 36]).norm(dim=-1, keepdim=True)
    return torch.stack([(mouth - eyes).norm(dim=-1), (points[:, 8] - mouth).norm(dim=-1)], 1) / scale


def _mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    return values.mean().item(), (values.std() / math.sqrt(len(values))).item() if len(values) > 1 else 0.0


def nme_scores(predicted: torch.Tensor, annotated: torch.Tensor) -> dict[str, float]:
    """NME over all 68 points (with its standard error over faces), the jaw's and the other 51's."""
    inner = [i for i in range(68) if not JAW.start <= i < JAW.stop]
    distances = (predicted - annotated).norm(dim=-1) / (annotated[:, 45] - annotated[:, 36]).norm(dim=-1, keepdim=True)
    nme, nme_se = _mean_and_se(landmark_nme(predicted, annotated))
    return {"nme": nme, "nme_se": nme_se, "nme_jaw": distances[:, JAW].mean().item(),
            "nme_inner": distances[:, inner].mean().item()}


def landmark_check(face_model: FaceModel, source: str | Path, settings: FitSettings = PHOTO_FIT,
                   annotator: Annotator | None = None, progress: bool = False) -> dict:
    """Every face MTCNN finds in the photos under ``source`` fitted as ``sgpn reconstruct`` fits
    it, then scored against the annotator: rows ``fit`` and ``five_points`` (the
    :func:`five_point_landmarks` baseline), each with ``nme`` (and its standard error over
    faces), ``nme_jaw`` and ``nme_inner``; ``fit_better`` (the fit's paired NME gain over the
    five points, and its standard error); the fit's ``jaw_offset``;
    the faces' ``eye_mouth_chin`` :func:`proportions` as annotated, fitted and on the mean face;
    the counts of photos, faces and annotated faces, and the unreadable files."""
    annotator = annotator or Annotator()
    _, files = input_images(source)
    fitted, baseline, annotated, skipped, faces_found = [], [], [], [], 0
    for path in tqdm(files, desc="fitting and annotating", unit="photo", disable=not progress):
        try:
            photo = read_rgb(path).to(torch.float32)
        except READ_ERRORS as err:
            skipped.append(f"{path.name}: {err}")
            continue
        faces = reconstruct_photo(face_model, photo, settings=settings)
        faces_found += len(faces)
        if not faces:
            continue
        marks = annotator(photo, torch.stack([face.box for face in faces]))
        for face, points in zip(faces, marks):
            if points is None:
                continue
            fitted.append(face.landmarks.double())
            baseline.append(five_point_landmarks(face_model, face.points))
            annotated.append(points)
    if not annotated:
        raise ValueError(f"the annotator found none of the {faces_found} faces under {source}")
    fitted, baseline, annotated = torch.stack(fitted), torch.stack(baseline), torch.stack(annotated)
    gain = landmark_nme(baseline, annotated) - landmark_nme(fitted, annotated)
    return {"photos": len(files) - len(skipped), "faces": faces_found, "annotated": len(annotated),
            "rows": {"fit": nme_scores(fitted, annotated), "five_points": nme_scores(baseline, annotated)},
            "fit_better": dict(zip(("nme", "se"), _mean_and_se(gain))),
            "jaw_offset": torch.stack([jaw_offset(f, a) for f, a in zip(fitted, annotated)]).mean(0).tolist(),
            "eye_mouth_chin": {"annotator": proportions(annotated).mean(0).tolist(),
                               "fit": proportions(fitted).mean(0).tolist(),
                               "mean_face": proportions(baseline).mean(0).tolist()}, "skipped": skipped}
