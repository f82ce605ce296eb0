import math

import numpy as np
import pytest
import torch
from conftest import write_bfm_mat

from sgpn.face3d import camera, coefficients
from sgpn.face3d.face_model import DEFAULT_LIGHT, FaceModel, light_from, load_face_model
from sgpn.face3d.morphable import load_bfm


@pytest.fixture
def model(bfm_path):
    return FaceModel(load_bfm(bfm_path))


def test_split_merge_round_trip():
    coeffs = torch.randn(4, 257)
    parts = coefficients.split(coeffs)
    assert [p.shape[1] for p in parts] == [80, 64, 80, 3, 27, 3]
    assert torch.equal(coefficients.merge(**parts._asdict()), coeffs)
    assert torch.equal(parts.angles, coeffs[:, 224:227])
    assert torch.equal(parts.trans, coeffs[:, 254:257])


def test_merge_fills_missing_parts_with_zeros():
    merged = coefficients.merge(exp=torch.ones(2, 64))
    assert merged.shape == (2, 257)
    assert merged[:, 80:144].eq(1).all() and merged[:, :80].eq(0).all() and merged[:, 144:].eq(0).all()
    with pytest.raises(ValueError, match="'gamma' must have shape"):
        coefficients.merge(gamma=torch.zeros(2, 26))


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (torch.zeros(2, 256), ValueError, r"shape \(B, 257\)"),
        (torch.zeros(2, 257, dtype=torch.long), TypeError, "floating-point"),
        (torch.full((1, 257), float("nan")), ValueError, "NaN or Inf"),
        (torch.tensor([[0.0] * 256 + [float("inf")]]), ValueError, "index 256"),
    ],
)
def test_bad_coefficients_are_named(bad, error, match):
    with pytest.raises(error, match=match):
        coefficients.split(bad)


def test_loader_converts_one_based_indices(bfm_path):
    arrays = load_bfm(bfm_path)
    assert arrays.faces.min() == 0
    assert arrays.point_buf.max() == len(arrays.faces)  # the padding face
    assert arrays.landmarks[0] == 0
    np.testing.assert_allclose(arrays.mean_tex, 180.0 / 255.0)


def test_mean_shape_is_recentred(model, bfm_path):
    arrays = load_bfm(bfm_path)
    zero = torch.zeros(1, 80), torch.zeros(1, 64)
    shape = model.compute_shape(*zero)[0]
    assert shape.mean(0).abs().max() < 1e-6
    expected = arrays.mean_shape - arrays.mean_shape.mean(0)
    np.testing.assert_allclose(shape.numpy(), expected, atol=1e-6)


def test_zero_gamma_gives_default_ambient_light(model):
    coeffs = torch.randn(2, 257) * 0.5
    coeffs[:, coefficients.SLICES["gamma"]] = 0
    face = model(coeffs)
    a0c0 = math.pi / math.sqrt(4 * math.pi)
    torch.testing.assert_close(face.colors, DEFAULT_LIGHT * a0c0 * face.albedo)


def test_zero_rotation_leaves_shape_unchanged(model):
    coeffs = torch.randn(3, 257) * 0.3
    coeffs[:, coefficients.SLICES["angles"]] = 0
    face = model(coeffs)
    trans = coeffs[:, None, coefficients.SLICES["trans"]]
    torch.testing.assert_close(face.vertices, camera.to_camera(face.shape + trans))


def test_rotation_matches_euler_convention():
    quarter = torch.tensor([[0.0, math.pi / 2, 0.0]])
    rot = FaceModel.rotation_matrix(quarter)[0]
    torch.testing.assert_close(rot @ rot.T, torch.eye(3), atol=1e-6, rtol=0)
    # R = Ry^T applied as v @ R: a yaw of +90 degrees takes +x to -z.
    torch.testing.assert_close(torch.tensor([1.0, 0, 0]) @ rot, torch.tensor([0.0, 0, -1.0]), atol=1e-6, rtol=0)


def test_flat_mesh_normals_face_the_camera(model):
    zero = torch.zeros(1, 257)
    normals = model.compute_normals(model.compute_shape(zero[:, :80], zero[:, 80:144]))
    centre = normals[0, normals.shape[1] // 2]
    assert centre[2] > 0.9  # counter-clockwise faces give normals towards +z
    assert torch.allclose(normals.norm(dim=-1), torch.ones(1))


def test_landmarks_are_projected_keypoints(model):
    face = model(torch.randn(2, 257) * 0.1, image_size=512)
    torch.testing.assert_close(face.landmarks_3d, face.vertices[:, model.landmark_index])
    torch.testing.assert_close(face.landmarks_2d, camera.project(face.landmarks_3d, 512))


def test_geometry_only_paths_match_the_full_face(open_model):
    coeffs = open_model.random_coefficients(3, generator=torch.Generator().manual_seed(1))
    face = open_model(coeffs, image_size=64)
    torch.testing.assert_close(open_model.landmarks_2d(coeffs, 64), face.landmarks_2d, atol=1e-4, rtol=0)
    torch.testing.assert_close(open_model.posed_vertices(coeffs), face.vertices)
    with pytest.raises(ValueError, match="257"):
        open_model.landmarks_2d(torch.zeros(2, 256))


def test_camera_centre_and_scaling():
    point = torch.tensor([[0.0, 0.0, 10.0], [1.0, 1.0, 10.0]])
    at224 = camera.project(point, 224)
    torch.testing.assert_close(at224[0], torch.tensor([111.5, 111.5]))
    torch.testing.assert_close(at224[1], torch.tensor([111.5 + 101.5, 111.5 - 101.5]))
    at512 = camera.project(point, 512)
    torch.testing.assert_close((at512 + 0.5) / 512, (at224 + 0.5) / 224)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.mat"):
        load_bfm(tmp_path / "nothere.mat")


def test_missing_key_is_named(tmp_path):
    path = write_bfm_mat(tmp_path / "bfm.mat", drop=("exBase",))
    with pytest.raises(ValueError, match="exBase"):
        load_bfm(path)


def test_wrong_shape_is_named(tmp_path):
    path = write_bfm_mat(tmp_path / "bfm.mat", override={"idBase": np.zeros((10, 80), np.float32)})
    with pytest.raises(ValueError, match="id_basis"):
        load_bfm(path)


def test_index_out_of_range_is_named(tmp_path):
    path = write_bfm_mat(tmp_path / "bfm.mat", override={"keypoints": np.full((1, 68), 10_000.0)})
    with pytest.raises(ValueError, match="landmarks"):
        load_bfm(path)


def test_corrupt_file_is_named(tmp_path):
    path = tmp_path / "BFM_model_front.mat"
    path.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    with pytest.raises(ValueError, match="not a readable .mat"):
        load_bfm(path)


def test_nan_in_basis_is_named(tmp_path):
    bad = np.zeros((360, 80), np.float32)
    bad[3, 4] = np.nan
    path = write_bfm_mat(tmp_path / "bfm.mat", override={"idBase": bad})
    with pytest.raises(ValueError, match="id_basis.*NaN"):
        load_bfm(path)


def test_environment_variable_selects_bfm(bfm_path, monkeypatch):
    monkeypatch.setenv("SGPN_BFM", str(bfm_path))
    model = load_face_model()
    assert model.num_vertices == 120 and "BFM" in model.name
    assert load_face_model(bfm_path).num_vertices == 120


@pytest.fixture(scope="module")
def open_model():
    return load_face_model("open")


@pytest.mark.parametrize("direction", ["above", "below", "left", "right"])
def test_light_from_lights_the_side_it_names_as_the_viewer_sees_it(open_model, direction):
    from sgpn.face3d.renderer import Renderer

    coeffs = torch.zeros(2, coefficients.NUM_COEFFS)
    band, value = light_from(direction, 0.5)
    coeffs[1, coefficients.SLICES["gamma"]].view(3, 9)[:, band] = value
    with torch.no_grad():
        out = Renderer(64)(open_model(coeffs, 64), open_model.faces)
    ratio = out.image[1].mean(0) / out.image[0].mean(0).clamp_min(0.05) * (out.mask[0, 0] > 0)
    halves = {"above": (ratio[:32], ratio[32:]), "below": (ratio[32:], ratio[:32]),
              "left": (ratio[:, :32], ratio[:, 32:]), "right": (ratio[:, 32:], ratio[:, :32])}[direction]
    assert halves[0].sum() > 1.2 * halves[1].sum()


def test_light_from_rejects_an_unknown_side():
    with pytest.raises(ValueError, match="unknown light direction 'behind'"):
        light_from("behind", 0.5)
