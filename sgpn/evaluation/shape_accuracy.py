"""How well a 3DMM regressor recovers a face, against the exact coefficients of synthetic faces.

The measures of ``sgpn bench shape`` and notebook 05, for coefficients predicted on held-out
faces whose truth is known:

* vertex error: mean distance between the unposed meshes (identity + expression), in model
  units (D3DFR's frame: 1 unit is 10 cm on the BFM, and the face is about 1.8 units wide);
* landmark NME: the 68 projected landmarks against the true ones, over the inter-ocular distance;
* pose error: the median absolute error of each Euler angle, in degrees;
* R²: the share of a coefficient's variance over the faces that the prediction explains
  (1 = exact, 0 = no better than guessing the average face), for groups of coefficients.

The mean face (all coefficients zero) is the baseline every regressor must beat.
"""

from __future__ import annotations

import math
import time
from typing import Iterable, Mapping

import torch

from sgpn.data.synthetic import synthetic_coefficients
from sgpn.evaluation.metrics import landmark_nme, mean_over_images, vertex_error
from sgpn.evaluation.tables import Evaluation, Row
from sgpn.evaluation.test_sets import DEGRADATION_LEVELS, TASK_OPTIONS, degraded_test_set
from sgpn.face3d import camera, coefficients
from sgpn.face3d.face_model import RANDOM_STD, FaceModel, vertex_gram
from sgpn.face3d.fitting import FitSettings, fit_coefficients
from sgpn.face3d.renderer import Renderer
from sgpn.photo.detection import detect_faces

#: The coefficient groups of ``sgpn bench shape``'s ``r2`` (mean R² over each group's values).
BENCH_GROUPS = ("id10", "exp8", "skin_tone", "gamma")
#: Every part of the vector, split into what a 64 px face shows and the rest (notebook 05's chart).
PART_GROUPS = ("id10", "id_rest", "exp8", "exp_rest", "skin_tone", "tex_named", "tex_rest",
               "angles", "gamma", "gamma_high", "trans")
GROUP_TITLES = {"id10": "identity 1–10", "id_rest": "identity 11–80", "exp8": "expression 1–8",
                "exp_rest": "expression 9–64", "skin_tone": "skin tone", "tex_named": "texture 2–8",
                "tex_rest": "texture 9–80", "angles": "pose angles", "gamma": "light, SH bands 0–3",
                "gamma_high": "light, SH bands 4–8", "trans": "translation"}


def _gamma_bands(bands: range) -> list[int]:
    start = coefficients.SLICES["gamma"].start
    return [start + 9 * colour + band for colour in range(3) for band in bands]


def group_indices(face_model: FaceModel) -> dict[str, list[int]]:
    """Indices into the 257 vector of every group in :data:`PART_GROUPS`.

    ``skin_tone`` is the texture component the model names "skin tone" (the kit's open model
    names its leading components; a model without names has no such group)."""
    s = coefficients.SLICES
    names = face_model.component_names.get("tex", [])
    skin = [i for i, name in enumerate(names) if name.startswith("skin tone")]
    groups = {"id10": list(range(s["id"].start, s["id"].start + 10)),
              "id_rest": list(range(s["id"].start + 10, s["id"].stop)),
              "exp8": list(range(s["exp"].start, s["exp"].start + 8)),
              "exp_rest": list(range(s["exp"].start + 8, s["exp"].stop)),
              "tex_named": [s["tex"].start + i for i in range(len(names)) if i not in skin][:7],
              "tex_rest": list(range(s["tex"].start + max(len(names), 1), s["tex"].stop)),
              "angles": list(range(s["angles"].start, s["angles"].stop)),
              "gamma": _gamma_bands(range(0, 4)), "gamma_high": _gamma_bands(range(4, 9)),
              "trans": list(range(s["trans"].start, s["trans"].stop))}
    if skin:
        groups["skin_tone"] = [s["tex"].start + skin[0]]
    return groups


def coefficient_r2(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """R² of each of the 257 coefficients over a batch of faces, ``(257,)``.

    ``nan`` where the target does not vary (nothing to explain)."""
    predicted = coefficients.check_coefficients(predicted, "predicted coefficients").double()
    target = coefficients.check_coefficients(target, "target coefficients").double()
    if predicted.shape != target.shape or len(target) < 2:
        raise ValueError(f"R² needs two or more matching faces, got {tuple(predicted.shape)} "
                         f"and {tuple(target.shape)}")
    residual = (predicted - target).pow(2).sum(0)
    spread = (target - target.mean(0)).pow(2).sum(0)
    return torch.where(spread > 1e-12, 1 - residual / spread.clamp_min(1e-12), math.nan).float()


def group_r2(face_model: FaceModel, predicted: torch.Tensor, target: torch.Tensor,
             groups=BENCH_GROUPS) -> dict[str, float]:
    """Mean R² of each coefficient group (named in :data:`PART_GROUPS`)."""
    r2, indices = coefficient_r2(predicted, target), group_indices(face_model)
    missing = [g for g in groups if g not in indices]
    if missing:
        raise ValueError(f"{face_model.name} has no {missing} group (it names no such component)")
    return {group: r2[indices[group]].nanmean().item() for group in groups}


def pose_errors_deg(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Median absolute error of each Euler angle (x pitch, y yaw, z roll) in degrees, ``(3,)``."""
    angles = coefficients.SLICES["angles"]
    return (predicted[:, angles] - target[:, angles]).abs().median(0).values * (180 / math.pi)


@torch.no_grad()
def per_face_errors(prior, predicted: torch.Tensor, test_set: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Vertex error and landmark NME of each face ``(B,)`` for coefficients ``predicted`` on
    ``test_set`` (``coeffs``, ``landmarks`` and ``hq`` for the crop size); ``prior`` gives the
    face model and the regressor's frame."""
    landmarks = prior.face_model.landmarks_2d(predicted, prior.frame_size)
    true_landmarks = prior.points_to_frame(test_set["landmarks"], test_set["hq"].shape[-1])
    return {"vertex_error": vertex_error(prior.face_model, predicted, test_set["coeffs"]),
            "nme": landmark_nme(landmarks, true_landmarks)}


def shape_scores(prior, predicted: torch.Tensor, test_set: Mapping[str, torch.Tensor]) -> dict:
    """The bench's row: mean errors (:func:`per_face_errors`), the largest of the three angles'
    median errors, and the R² of :data:`BENCH_GROUPS`."""
    errors = per_face_errors(prior, predicted, test_set)
    return {**{name: values.mean().item() for name, values in errors.items()},
            "pose_error_deg": pose_errors_deg(predicted, test_set["coeffs"]).max().item(),
            "r2": group_r2(prior.face_model, predicted, test_set["coeffs"])}


@torch.no_grad()
def predict(prior, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """A shape prior's coefficients for ``[0, 1]`` face crops, in eval mode."""
    prior.eval()
    return torch.cat([prior.regressor(prior.to_regressor_frame(chunk * 2 - 1))
                      for chunk in images.split(batch_size)])


@torch.no_grad()
def component_moves_px(face_model: FaceModel, image_size: int, count: int = 10) -> dict[str, torch.Tensor]:
    """How far one standard deviation of each of the first ``count`` identity and expression
    components moves the face: the RMS over vertices, in pixels of an ``image_size`` crop
    (``{"id": (count,), "exp": (count,)}``). Set next to each component's R², it shows which
    ones an image of that size can show."""
    return {part: vertex_gram(basis[:, :count]).diag().sqrt() * RANDOM_STD[part] / camera.pixel_span(image_size)
            for part, basis in (("id", face_model.id_basis), ("exp", face_model.exp_basis))}


@torch.no_grad()
def per_vertex_error(face_model: FaceModel, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the faces of each vertex's distance to the truth (unposed), ``(N,)`` in model units."""
    meshes = [face_model.compute_shape(p.id, p.exp) for p in map(coefficients.split, (predicted, target))]
    return (meshes[0] - meshes[1]).norm(dim=-1).mean(0)


#: The rows of ``sgpn bench shape`` and their titles.
ROW_TITLES = {"mean_face": "mean face", "teacher_hq": "teacher on HQ", "teacher_lq": "teacher on LQ",
              "regressor_lq": "LQ regressor on LQ"}


def row_predictions(teacher, regressor_lq, test_set: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The coefficients of each row of :data:`ROW_TITLES` on one degraded test set: the mean face
    (all zero), the teacher on HQ and on LQ faces, and the LQ regressor on LQ faces."""
    if regressor_lq.frame_size != teacher.frame_size:
        raise ValueError(f"the teacher reads {teacher.frame_size} px and the LQ regressor "
                         f"{regressor_lq.frame_size} px; compare regressors of one frame")
    return {"mean_face": torch.zeros_like(test_set["coeffs"]),
            "teacher_hq": predict(teacher, test_set["hq"]),
            "teacher_lq": predict(teacher, test_set["lq"]),
            "regressor_lq": predict(regressor_lq, test_set["lq"])}


def shape_rows(teacher, regressor_lq, test_set: Mapping[str, torch.Tensor]) -> dict[str, dict]:
    """``sgpn bench shape``'s rows (:func:`shape_scores` of :func:`row_predictions`)."""
    predictions = row_predictions(teacher, regressor_lq, test_set)
    return {name: shape_scores(teacher, coeffs, test_set) for name, coeffs in predictions.items()}


def detected_points(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MTCNN's five points on each ``[0, 1]`` face crop (its most probable face, any probability)
    and which crops it found a face in: ``((B, 5, 2), (B,) bool)``; missed crops get zeros."""
    points, found = torch.zeros(len(images), 5, 2), torch.zeros(len(images), dtype=torch.bool)
    for i, image in enumerate(images):
        faces = detect_faces(image, threshold=0.0)
        if faces:
            points[i], found[i] = faces[0].points.float(), True
    return points, found


@torch.no_grad()
def contour_gap_nme(face_model: FaceModel, yaw_degrees: float, size: int = 224) -> float:
    """What fixed contour landmarks cost on a turned face: the model's jaw points 0-16 are fixed
    vertices (as D3DFR's are), while an annotator follows the face's outline. On the mean face
    turned by ``yaw_degrees``, each jaw point's distance along its image row to the render's
    outline on its own side, over the inter-ocular distance (outer eye corners), summed over
    the 16 side points and divided by 68: the NME those points add before any fitting error."""
    coeffs = torch.zeros(1, coefficients.NUM_COEFFS)
    coeffs[0, coefficients.SLICES["angles"].start + 1] = math.radians(yaw_degrees)
    face = face_model(coeffs, size)
    mask = Renderer(size)(face, face_model.faces).mask[0, 0] > 0
    landmarks = face.landmarks_2d[0]
    eyes = (landmarks[45] - landmarks[36]).norm()
    gaps = []
    for point in [*range(0, 8), *range(9, 17)]:  # the chin (8) has no side
        x, y = landmarks[point]
        columns = mask[int(y.round().clamp(0, size - 1))].nonzero()[:, 0].float()
        if len(columns):
            gaps.append((x - (columns.min() if point < 8 else columns.max())).abs() / eyes)
    return (sum(gaps) / 68).item()


#: The rows of ``sgpn bench fit`` and their titles.
FIT_TITLES = {"teacher": "teacher (regression)", "fit": "fit from the mean face",
              "teacher_then_fit": "fit from the teacher"}


def fitted_predictions(teacher, test_set: Mapping[str, torch.Tensor], settings: FitSettings = FitSettings()) -> dict:
    """The rows of :data:`FIT_TITLES` on the HQ faces of ``test_set`` that MTCNN finds (the fit
    needs their five points; the faces are fitted as one batch): ``faces`` (those faces' part of
    the test set), ``predictions`` (coefficients per row) and ``fits`` (the two fits' results:
    losses per step, seconds)."""
    points, found = detected_points(test_set["hq"])
    faces = {key: value[found] for key, value in test_set.items() if torch.is_tensor(value)}
    began = time.perf_counter()
    regressed = predict(teacher, faces["hq"])
    regression_seconds = time.perf_counter() - began
    fits = {name: fit_coefficients(teacher.face_model, faces["hq"], points[found], init=init, settings=settings)
            for name, init in (("fit", None), ("teacher_then_fit", regressed))}
    return {"faces": faces, "fits": fits, "seconds": {"teacher": regression_seconds,
                                                      **{name: fit.seconds for name, fit in fits.items()}},
            "predictions": {"teacher": regressed, **{name: fit.coeffs for name, fit in fits.items()}}}


def fit_rows(teacher, test_set: Mapping[str, torch.Tensor], settings: FitSettings = FitSettings()) -> dict:
    """``sgpn bench fit``'s rows (:func:`fitted_predictions`), each in :func:`shape_scores`'
    format plus its seconds per face (the regression's included)."""
    result = fitted_predictions(teacher, test_set, settings)
    faces = result["faces"]
    rows = {name: {**shape_scores(teacher, coeffs, faces), "seconds_per_face": result["seconds"][name] / len(faces["hq"])}
            for name, coeffs in result["predictions"].items()}
    return {"detected": len(faces["hq"]), "rows": rows}


@torch.no_grad()
def landmark_readout(face_model: FaceModel, noise_px: float, image_size: int = 64,
                     num_train: int = 8000, num_test: int = 512, seed: int = 0,
                     translation_range=None) -> dict:
    """What the 68 landmarks alone say about a synthetic face: the least-squares linear map
    from their pixel positions (plus Gaussian noise of ``noise_px``) to the coefficients,
    fitted on ``num_train`` faces and scored on ``num_test`` others.

    A yardstick for regressors, not one itself: with exact landmarks it shows what the 2D
    geometry determines, and the noise shows how fast the shape is lost when the landmarks are
    read less precisely. ``translation_range``: the faces' translation ranges (default: the
    synthetic faces'); a wider depth range makes a face's size trade off against its distance
    to the camera.
    Returns the vertex error relative to the mean face's, the NME of the noisy landmarks and
    the R² of the leading identity and expression components."""
    generator = torch.Generator().manual_seed(seed)
    faces = synthetic_coefficients(face_model, generator, num_train + num_test)
    if translation_range is not None:  # the same faces, moved within other ranges
        low, high = torch.tensor(translation_range, dtype=torch.float32).T
        faces[:, coefficients.SLICES["trans"]] = low + (high - low) * torch.rand(len(faces), 3, generator=generator)
    landmarks = camera.project(face_model.landmarks_3d(faces), image_size)
    noisy = landmarks + noise_px * torch.randn(landmarks.shape, generator=generator)
    features = torch.cat([noisy.flatten(1), torch.ones(len(noisy), 1)], 1).double()
    fit = torch.linalg.lstsq(features[:num_train], faces[:num_train].double()).solution
    predicted, truth = (features[num_train:] @ fit).float(), faces[num_train:]
    # the shape is linear in the coefficients: both vertex errors from two shapes, not four
    offsets = [face_model.compute_shape(parts.id, parts.exp) - face_model.mean_shape.view(1, -1, 3)
               for parts in map(coefficients.split, (predicted - truth, truth))]
    error, mean_face = (offset.norm(dim=-1).mean() for offset in offsets)
    return {"vertex_error_ratio": (error / mean_face).item(),
            "nme": landmark_nme(noisy[num_train:], landmarks[num_train:]).mean().item(),
            "r2": group_r2(face_model, predicted, truth, ("id10", "exp8"))}
@torch.no_grad()
def shape_from_lq(regressors: Mapping[str, object], faces, levels: Iterable[str] = DEGRADATION_LEVELS,
                  batch_size: int = 64) -> Evaluation:
    """Vertex error and landmark NME against ground truth of shape priors (``{name: ShapePrior}``)
    reading LQ faces, at each degradation level of :data:`DEGRADATION_LEVELS` (and on HQ)."""
    evaluation = Evaluation(metrics=("nme", "vertex_error"))
    for level in ["HQ", *levels]:
        options = {**TASK_OPTIONS["blind"], **DEGRADATION_LEVELS.get(level, {})}
        test_set = degraded_test_set(faces, "blind", options, batch_size)
        images = test_set["hq"] if level == "HQ" else test_set["lq"]
        for name, prior in regressors.items():
            prior.eval()
            coeffs = torch.cat([prior.regressor(prior.to_regressor_frame(chunk * 2 - 1))
                                for chunk in images.split(batch_size)])
            landmarks = prior.face_model.landmarks_2d(coeffs, prior.frame_size)
            target = prior.points_to_frame(test_set["landmarks"], images.shape[-1])
            results = {"nme": mean_over_images([landmark_nme(landmarks, target)]),
                       "vertex_error": mean_over_images([vertex_error(prior.face_model, coeffs, test_set["coeffs"])])}
            evaluation.rows.append(Row(f"blind ({level})" if level != "HQ" else "HQ (no degradation)",
                                       name, results, len(images)))
    return evaluation
