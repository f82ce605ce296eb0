"""The built-in open face model: a valid, BFM-shaped, human-looking morphable model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgpn.face3d import camera
from sgpn.face3d.builtin_model import build_open_face_model
from sgpn.face3d.face_model import FaceModel, load_face_model

# D3DFR's 5-point 3D template: eye centres, nose tip, mouth corners.
D3DFR_FIVE_POINTS = np.array([
    (-0.3115, 0.2904, 0.1338), (0.3098, 0.2897, 0.1318), (0.0033, -0.0462, 0.5524),
    (-0.2522, -0.3813, 0.2241), (0.2485, -0.3813, 0.2224),
])


@pytest.fixture(scope="module")
def arrays():
    return build_open_face_model()


@pytest.fixture(scope="module")
def model(arrays):
    return FaceModel(arrays)


@pytest.fixture(scope="module")
def centred(arrays):
    shape = arrays.mean_shape.astype(np.float64)
    return shape - shape.mean(0)


def signed_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Twice the signed area of each face seen from +z (positive: counter-clockwise)."""
    a, b, c = (vertices[..., faces[:, k], :2] for k in range(3))
    ab, ac = b - a, c - a
    return ab[..., 0] * ac[..., 1] - ab[..., 1] * ac[..., 0]


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """D3DFR's five points from 68 landmarks (eye centres are the mean of the eye corners)."""
    lm = landmarks
    return np.stack([lm[[36, 39]].mean(0), lm[[42, 45]].mean(0), lm[30], lm[48], lm[54]])


def test_mesh_is_large_valid_and_counter_clockwise(arrays, centred):
    n, f = len(arrays.mean_shape), len(arrays.faces)
    assert n >= 20_000 and f >= 2 * n - 2_000
    arrays.validate()
    areas = signed_areas(centred, arrays.faces)
    assert (areas > 1e-7).all(), "every face is non-degenerate and counter-clockwise from +z"
    v1, v2, v3 = (centred[arrays.faces[:, k]] for k in range(3))
    assert (np.cross(v1 - v2, v2 - v3)[:, 2] > 0).all(), "D3DFR's face normal points at the camera"
    assert len(np.unique(arrays.faces)) == n, "no vertex is left out of the mesh"


def test_point_buf_lists_the_faces_around_each_vertex(arrays):
    n, f = len(arrays.mean_shape), len(arrays.faces)
    expected = np.bincount(arrays.faces.reshape(-1), minlength=n)
    assert expected.max() <= 8
    listed = arrays.point_buf < f
    assert np.array_equal(listed.sum(1), expected)
    rows, slots = np.nonzero(listed)
    assert (arrays.faces[arrays.point_buf[rows, slots]] == rows[:, None]).any(1).all()
    assert (arrays.point_buf[~listed] == f).all()


def test_face_sits_in_d3dfr_frame_and_fills_a_crop(arrays, centred, model):
    """Features on D3DFR's template; at pose 0 the face fills a 224 crop as D3DFR's does."""
    np.testing.assert_allclose(five_points(centred[arrays.landmarks]), D3DFR_FIVE_POINTS, atol=0.02)
    x, y = centred[:, 0], centred[:, 1]
    assert 0.8 < x.max() < 0.95 and np.isclose(x.min(), -x.max(), atol=1e-4)
    assert 0.85 < y.max() < 0.95 and -1.0 < y.min() < -0.9
    with torch.no_grad():
        all_px = camera.project(model(torch.zeros(1, 257)).vertices[0], 224)
    width = all_px[:, 0].max() - all_px[:, 0].min()
    height = all_px[:, 1].max() - all_px[:, 1].min()
    assert 150 < width < 200 and 170 < height < 215
    assert abs(all_px[:, 0].mean() - 111.5) < 1 and all_px.min() > 0 and all_px.max() < 223


def test_bases_are_orthogonal_and_ordered_by_norm(arrays):
    for name in ("id", "exp", "tex"):
        basis = getattr(arrays, f"{name}_basis").astype(np.float64)
        norms = np.linalg.norm(basis, axis=0)
        gram = basis.T @ basis / np.outer(norms, norms)
        off_diagonal = np.abs(gram - np.eye(len(norms))).max()
        assert off_diagonal < 1e-4, f"{name}: columns not orthogonal ({off_diagonal:.2e})"
        assert (np.diff(norms) <= 1e-6 * norms[0]).all(), f"{name}: norms must not increase"
        assert norms[-1] > 0


def test_leading_components_are_named(arrays):
    names = arrays.component_names
    assert set(names) == {"id", "exp", "tex"}
    for part, required in (
        ("id", {"face width", "nose size", "jaw width", "chin length", "eye spacing",
                "lip fullness"}),
        ("exp", {"smile", "mouth open", "brow raise", "eye close", "frown", "pucker"}),
        ("tex", {"skin tone (dark to light)", "redness", "lip redness", "brow darkness"}),
    ):
        assert 6 <= len(names[part]) <= 10 and len(set(names[part])) == len(names[part])
        assert required <= set(names[part]), f"{part}: missing {required - set(names[part])}"


def component(arrays, part: str, name: str) -> np.ndarray:
    basis = {"id": arrays.id_basis, "exp": arrays.exp_basis, "tex": arrays.tex_basis}[part]
    return basis[:, arrays.component_names[part].index(name)].astype(np.float64).reshape(-1, 3)


def test_named_components_do_what_their_names_say(arrays, centred):
    lm = arrays.landmarks

    def moved(part, name, amount=2.0):
        return centred + amount * component(arrays, part, name)

    def gap(v, top, bottom):
        return v[lm[top], 1] - v[lm[bottom], 1]

    assert np.ptp(moved("id", "face width")[:, 0]) > np.ptp(centred[:, 0]) + 0.05
    assert moved("id", "nose size")[lm[30], 2] > centred[lm[30], 2] + 0.02
    assert gap(moved("id", "chin length"), 57, 8) > gap(centred, 57, 8) + 0.02
    eyes = lm[[36, 45]]
    assert np.ptp(moved("id", "eye spacing")[eyes, 0]) > np.ptp(centred[eyes, 0]) + 0.01
    smile = moved("exp", "smile")
    assert (smile[lm[[48, 54]], 1] > centred[lm[[48, 54]], 1] + 0.02).all()
    assert gap(moved("exp", "mouth open"), 62, 66) > gap(centred, 62, 66) + 0.03
    closed = centred + 3.0 * component(arrays, "exp", "eye close")
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        assert gap(closed, upper, lower) < 0.25 * gap(centred, upper, lower)
    assert (moved("exp", "brow raise")[lm[17:27], 1] > centred[lm[17:27], 1] + 0.02).all()

    tex = arrays.mean_tex.reshape(-1, 3).astype(np.float64)
    assert (tex + component(arrays, "tex", "skin tone (dark to light)")).mean() > tex.mean() + 0.05
    lips = arrays.regions == arrays.region_names.index("lips")
    redder = tex + 2 * component(arrays, "tex", "lip redness")
    assert (redder[lips, 0] - redder[lips, 1]).mean() > (tex[lips, 0] - tex[lips, 1]).mean() + 0.05


def test_expressions_stay_on_the_moving_parts(arrays, centred):
    x, y = centred[:, 0], centred[:, 1]
    still = (y > 0.75) | ((np.abs(x) < 0.05) & (y > 0.0) & (y < 0.2))  # upper forehead, nose bridge
    energy = arrays.exp_basis.astype(np.float64).reshape(-1, 3, arrays.exp_basis.shape[1]) ** 2
    share = energy[still].sum((0, 1)) / energy.sum((0, 1))
    assert share.max() < 0.05, f"expression {share.argmax()} moves still parts ({share.max():.3f})"


def test_landmarks_sit_on_their_features(arrays, centred):
    lm = centred[arrays.landmarks]
    regions = np.asarray(arrays.region_names)[arrays.regions[arrays.landmarks]]
    assert len(set(arrays.landmarks.tolist())) == 68
    assert lm[30, 2] == pytest.approx(centred[:, 2].max(), abs=0.02), "nose tip is most forward"
    assert lm[36:42, 0].max() < 0 < lm[42:48, 0].min(), "image-left eye is left of the right one"
    assert (lm[0:8, 0] < 0).all() and (lm[9:17, 0] > 0).all() and abs(lm[8, 0]) < 0.02
    assert lm[8, 1] == pytest.approx(centred[:, 1].min(), abs=0.06), "landmark 8 is the chin"
    assert lm[17:27, 1].min() > lm[36:48, 1].max(), "brows above eyes"
    assert lm[36:48, 1].min() > lm[30, 1] > lm[48:68, 1].max(), "eyes above nose tip above mouth"
    assert lm[48, 0] < lm[51, 0] < lm[54, 0] and lm[51, 1] > lm[62, 1] > lm[66, 1] > lm[57, 1]
    assert (np.diff(lm[27:31, 1]) < 0).all(), "nose bridge runs down to the tip"
    assert set(regions[17:27]) == {"brow"} and set(regions[48:60]) <= {"lips", "skin", "cheek"}
    assert set(regions[27:36]) == {"nose"}


def test_skin_mask_and_regions(arrays):
    names = np.asarray(arrays.region_names)[arrays.regions]
    assert set(arrays.region_names) >= {"forehead", "brow", "eye", "nose", "lips", "mouth_interior",
                                        "cheek", "chin", "jaw"}
    assert set(np.unique(names)) == set(arrays.region_names), "every region has vertices"
    for part in ("eye", "lips", "mouth_interior"):
        assert not arrays.skin_mask[names == part].any(), f"{part} is not skin"
    assert not arrays.skin_mask[names == "brow"].any()
    assert arrays.skin_mask[np.isin(names, ["forehead", "cheek", "chin", "jaw"])].all()
    assert 0.85 < arrays.skin_mask.mean() < 0.99


def test_mean_texture_reads_as_a_face(arrays):
    tex = arrays.mean_tex.reshape(-1, 3)
    names = np.asarray(arrays.region_names)[arrays.regions]
    assert tex.min() >= 0 and tex.max() <= 1
    skin = tex[np.isin(names, ["forehead", "cheek"])].mean(0)
    assert skin[0] > skin[1] > skin[2] and skin.mean() > 0.5, "warm, light skin"
    lips = tex[names == "lips"].mean(0)
    assert lips[0] / lips[1] > skin[0] / skin[1] + 0.2, "lips pinker than skin"
    assert tex[names == "mouth_interior"].mean() < 0.2
    assert tex[names == "brow"].mean() < skin.mean() - 0.2
    eye = tex[names == "eye"]
    assert (eye.mean(1) > 0.75).mean() > 0.3, "white sclera"
    assert (eye.mean(1) < 0.1).any(), "dark pupils"


def test_random_faces_are_plausible(model, arrays, centred):
    generator = torch.Generator().manual_seed(0)
    coeffs = model.random_coefficients(50, generator=generator, pose=False, lighting=False)
    with torch.no_grad():
        parts_id, parts_exp, parts_tex = coeffs[:, :80], coeffs[:, 80:144], coeffs[:, 144:224]
        shapes = model.compute_shape(parts_id, parts_exp).double().numpy()
        albedo = model.compute_albedo(parts_tex).numpy()
    faces = arrays.faces
    flipped = (signed_areas(shapes, faces) <= 0).mean(1)
    assert flipped.max() < 0.01 and flipped.mean() < 0.002, f"flipped faces: {flipped.max():.4f}"
    edges = np.linalg.norm(shapes[:, faces] - shapes[:, faces[:, [1, 2, 0]]], axis=-1)
    neutral = np.linalg.norm(centred[faces] - centred[faces[:, [1, 2, 0]]], axis=-1)
    assert edges.max() / edges.mean() < 6 * neutral.max() / neutral.mean()
    assert ((edges / neutral) > 0.2).mean() > 0.999 and (edges / neutral).max() < 5
    assert ((albedo >= 0) & (albedo <= 1)).mean() > 0.99
    lm = shapes[:, arrays.landmarks]
    assert (lm[:, 36:42, 0].max(1) < lm[:, 42:48, 0].min(1)).all()
    assert (lm[:, 0, 0] < lm[:, 16, 0]).all() and (lm[:, 48, 0] < lm[:, 54, 0]).all()
    assert (lm[:, 19, 1] > lm[:, 37, 1]).all() and (lm[:, 37, 1] > lm[:, 30, 1]).all()
    assert (lm[:, 30, 1] > lm[:, 51, 1]).all() and (lm[:, 57, 1] > lm[:, 8, 1]).all()


def test_build_is_deterministic_and_cached(arrays):
    assert build_open_face_model() is arrays
    again = build_open_face_model.__wrapped__()
    for field in ("mean_shape", "id_basis", "exp_basis", "mean_tex", "tex_basis", "faces",
                  "point_buf", "landmarks", "skin_mask", "regions"):
        assert np.array_equal(getattr(again, field), getattr(arrays, field)), field
    assert again.component_names == arrays.component_names


def test_it_is_the_default_face_model(monkeypatch, arrays):
    monkeypatch.delenv("SGPN_BFM", raising=False)
    model = load_face_model()
    assert model.num_vertices == len(arrays.mean_shape)
    assert model.region_names == arrays.region_names
    assert model.component_names["exp"] == arrays.component_names["exp"]
