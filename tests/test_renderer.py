
import pytest
import torch
from conftest import grid_mesh

from sgpn.face3d import camera
from sgpn.face3d.face_model import FaceModel
from sgpn.face3d.morphable import load_bfm
from sgpn.face3d.renderer import Renderer, rasterize, rasterize_pytorch3d


def mesh(rows=14, cols=12, **kw):
    vertices, faces = grid_mesh(rows, cols, **kw)
    return torch.from_numpy(vertices), torch.from_numpy(faces)


def posed(vertices, angles=(0.2, -0.4, 0.1), trans=(0.05, -0.1, 0.0)):
    rot = FaceModel.rotation_matrix(torch.tensor([angles]))
    return camera.to_camera((vertices @ rot[0].to(vertices) + torch.tensor(trans).to(vertices))[None])


def assert_agrees(vertices, faces, image_size=48, min_agreement=0.998):
    fast = rasterize(vertices, faces, image_size)
    ref = rasterize_pytorch3d(vertices, faces, image_size)
    same = fast.pix_to_face == ref.pix_to_face
    assert same.float().mean() >= min_agreement, f"agreement {same.float().mean():.4f}"
    both = same & (ref.pix_to_face >= 0)
    torch.testing.assert_close(fast.bary_coords[both], ref.bary_coords[both], atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.zbuf[both], ref.zbuf[both], atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.dists[both], ref.dists[both], atol=1e-5, rtol=0)
    return fast, ref


def test_agrees_with_pytorch3d_on_a_posed_mesh():
    vertices, faces = mesh()
    fast, ref = assert_agrees(posed(vertices), faces)
    assert (ref.pix_to_face >= 0).float().mean() > 0.3  # the test sees a real mesh


def test_agrees_on_a_batch_with_packed_face_indices():
    vertices, faces = mesh()
    batch = torch.cat([posed(vertices), posed(vertices, angles=(0, 0.5, 0), trans=(0.2, 0, 1))])
    fast, _ = assert_agrees(batch, faces)
    second = fast.pix_to_face[1]
    assert second[second >= 0].min() >= len(faces)  # packed: b * F + f


def test_back_facing_faces_are_drawn_like_pytorch3d():
    vertices, faces = mesh()
    fast, ref = assert_agrees(posed(vertices), faces.flip(-1))
    assert (fast.pix_to_face >= 0).any()


def test_off_screen_mesh_covers_nothing():
    vertices, faces = mesh()
    fast, ref = assert_agrees(posed(vertices, trans=(4.0, 0.0, 0.0)), faces)
    assert (fast.pix_to_face < 0).all()


def test_degenerate_faces_are_skipped():
    vertices, faces = mesh()
    collinear = torch.tensor([[0, 1, 2]])  # three vertices on one grid row
    fast, ref = assert_agrees(posed(vertices), torch.cat([collinear, faces]))
    assert not (fast.pix_to_face == 0).any()


@pytest.mark.parametrize("depth", [3.0, 3.5])
def test_mesh_through_the_near_plane_is_clipped_like_pytorch3d(depth):
    vertices, faces = mesh(size=8.0)
    # Tilt the sheet so that its near half lies behind the near plane (z < 2.5) and part of it
    # behind the camera itself (z < 0).
    cam = posed(vertices, angles=(1.2, 0.0, 0.0), trans=(0.0, 0.0, 10 - depth))
    assert (cam[..., 2] < 0).any() and (cam[..., 2] > 2.5).any()
    fast, ref = assert_agrees(cam, faces, image_size=40)
    assert (fast.pix_to_face >= 0).any()


def test_mesh_entirely_behind_the_camera_covers_nothing():
    vertices, faces = mesh()
    fast, ref = assert_agrees(posed(vertices, trans=(0, 0, 12.0)), faces)
    assert (ref.pix_to_face < 0).all()


def test_nearest_face_wins():
    vertices, faces = mesh()
    near = posed(vertices, angles=(0, 0, 0), trans=(0, 0, 1.0))
    far = posed(vertices, angles=(0, 0, 0), trans=(0, 0, 0.0))
    both = torch.cat([far, near], dim=1)
    all_faces = torch.cat([faces, faces + vertices.shape[0]])
    fast, _ = assert_agrees(both, all_faces)
    covered = fast.pix_to_face >= 0
    assert (fast.pix_to_face[covered] >= len(faces)).all()


def test_gradients_through_barycentrics():
    vertices, faces = mesh(rows=5, cols=5)
    cam = posed(vertices.double()).clone().requires_grad_(True)
    colors = torch.rand(1, cam.shape[1], 3, dtype=torch.double, requires_grad=True)
    weights = torch.rand(1, 3, 24, 24, dtype=torch.double)

    def render(verts, cols):
        from sgpn.face3d.face_model import FaceOutput

        face = FaceOutput(*([None] * 2), None, None, cols, verts[:, :68], None)._replace(vertices=verts)
        out = Renderer(24, backend="fast")(face, faces)
        return (out.image * weights).sum()

    # Small steps keep coverage fixed, so the finite differences see the barycentric path.
    assert torch.autograd.gradcheck(render, (cam, colors), eps=1e-7, atol=1e-4)
    render(cam, colors).backward()
    assert cam.grad.abs().sum() > 0 and colors.grad.abs().sum() > 0


def test_renderer_image_mask_and_landmarks(bfm_path):
    model = FaceModel(load_bfm(bfm_path))
    face = model(torch.zeros(2, 257), image_size=64)
    out = Renderer(64, backend="fast")(face, model.faces)
    assert out.image.shape == (2, 3, 64, 64) and out.mask.shape == (2, 1, 64, 64)
    assert torch.equal(out.image * (1 - out.mask), torch.zeros_like(out.image))
    assert out.mask.mean() > 0.2
    torch.testing.assert_close(out.landmarks, face.landmarks_2d)
    reference = Renderer(64, backend="pytorch3d")(face, model.faces)
    assert (reference.mask == out.mask).float().mean() > 0.995


@pytest.mark.parametrize(
    "vertices, faces, error, match",
    [
        (torch.zeros(10, 3), torch.zeros(1, 3, dtype=torch.long), ValueError, r"\(B, N, 3\)"),
        (torch.zeros(1, 10, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long), TypeError, "floating"),
        (torch.full((1, 10, 3), float("nan")), torch.zeros(1, 3, dtype=torch.long), ValueError, "NaN"),
        (torch.zeros(1, 10, 3), torch.zeros(1, 3), TypeError, "integer"),
        (torch.zeros(1, 10, 3), torch.tensor([[0, 1, 10]]), ValueError, "10 vertices"),
    ],
)
def test_bad_meshes_get_clear_errors(vertices, faces, error, match):
    with pytest.raises(error, match=match):
        rasterize(vertices, faces, 16)


def test_bad_renderer_settings():
    with pytest.raises(ValueError, match="backend"):
        Renderer(64, backend="opengl")
    with pytest.raises(ValueError, match="image_size"):
        Renderer(0)
