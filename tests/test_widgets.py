"""The coefficient explorer works headless: callbacks run by setting slider values."""

import numpy as np
import pytest
import torch

from sgpn.app.widgets import CoefficientExplorer, EchoGuard, preview_mesh
from sgpn.face3d import coefficients
from sgpn.face3d.face_model import FaceModel, light_from
from sgpn.face3d.morphable import load_bfm


@pytest.fixture
def explorer(bfm_path):
    return CoefficientExplorer(FaceModel(load_bfm(bfm_path)), image_size=64)


def test_identity_slider_moves_coefficients_image_and_mesh(explorer):
    before_png, before_x = explorer.image.value, np.array(explorer.mesh_figure.data[0].x)
    explorer.sliders["id", 0].value = 2.5
    assert explorer.coeffs[0, 0] == pytest.approx(2.5)
    assert explorer.image.value != before_png
    assert not np.allclose(np.array(explorer.mesh_figure.data[0].x), before_x)


def test_texture_slider_changes_mesh_colours_not_positions(explorer):
    x = np.array(explorer.mesh_figure.data[0].x)
    colours = list(explorer.mesh_figure.data[0].vertexcolor)
    explorer.sliders["tex", 1].value = -3.0
    assert explorer.coeffs[0, coefficients.SLICES["tex"].start + 1] == pytest.approx(-3.0)
    assert list(explorer.mesh_figure.data[0].vertexcolor) != colours
    np.testing.assert_array_equal(np.array(explorer.mesh_figure.data[0].x), x)


def test_lighting_and_pose_sliders(explorer):
    for side in ("left", "above", "front"):  # each slider writes what light_from says lights that side
        explorer.sliders[f"light from {side}"].value = 0.5
        band, value = light_from(side, 0.5)
        gamma = explorer.coeffs[0, coefficients.SLICES["gamma"]].view(3, 9)
        assert torch.allclose(gamma[:, band], torch.tensor(value))
    assert gamma[0, 1] < 0  # D3DFR's band 1 is -y: light from above is a negative coefficient
    explorer.sliders["yaw"].value = 0.3
    assert explorer.coeffs[0, coefficients.SLICES["angles"].start + 1] == pytest.approx(0.3)


def test_random_face_and_reset_buttons(explorer):
    explorer.random_button.click()
    assert explorer.coeffs.abs().sum() > 0
    assert explorer.sliders["id", 0].value == pytest.approx(
        float(np.clip(explorer.coeffs[0, 0], -3, 3)), abs=1e-6)
    explorer.reset_button.click()
    assert explorer.coeffs.abs().sum() == 0
    assert all(s.value == 0 for s in explorer.sliders.values())


def test_faces_are_sent_once(explorer):
    mesh = explorer.mesh_figure.data[0]
    i_before = mesh.i
    explorer.sliders["exp", 0].value = 1.0
    assert mesh.i is i_before


def browser_snap(slider, value):
    """What a browser slider sends back for ``value``: snapped to the step, with float noise."""
    return round((value - slider.min) / slider.step) * slider.step + slider.min


def test_browser_echoes_of_a_random_face_give_no_update_and_keep_the_drawn_values(explorer):
    explorer.random_button.click()
    drawn, updates = explorer.coeffs.clone(), explorer.updates
    for slider in explorer.sliders.values():  # set_state is how a browser message arrives
        slider.set_state({"value": browser_snap(slider, slider.value)})
    assert explorer.updates == updates
    torch.testing.assert_close(explorer.coeffs, drawn, rtol=0, atol=0)


def test_reset_holds_when_echoes_of_earlier_values_arrive_after_it(explorer):
    explorer.sliders["exp", 0].value = 2.0
    explorer.sliders["yaw"].value = 0.3
    explorer.reset()
    updates = explorer.updates
    explorer.sliders["exp", 0].set_state({"value": 2.0000000000000004})
    explorer.sliders["yaw"].set_state({"value": browser_snap(explorer.sliders["yaw"], 0.3)})
    assert explorer.updates == updates
    assert explorer.coeffs.abs().sum() == 0
    assert explorer.sliders["exp", 0].value == 0 and explorer.sliders["yaw"].value == 0


def test_a_browser_move_of_one_step_is_one_update(explorer):
    explorer.sliders["yaw"].value = 0.3
    updates = explorer.updates
    explorer.sliders["yaw"].set_state({"value": 0.35})
    assert explorer.updates == updates + 1
    assert explorer.coeffs[0, coefficients.SLICES["angles"].start + 1] == pytest.approx(0.35)


def test_lighting_slider_keeps_the_colour_tint(explorer):
    explorer.random_button.click()
    gamma = explorer.coeffs[0, coefficients.SLICES["gamma"]].view(3, 9)
    band, _ = light_from("left", 0.5)
    tint = gamma[:, band] - gamma[:, band].mean()
    explorer.sliders["light from left"].value = 0.5
    gamma = explorer.coeffs[0, coefficients.SLICES["gamma"]].view(3, 9)
    torch.testing.assert_close(gamma[:, band] - gamma[:, band].mean(), tint)
    assert gamma[:, band].mean() == pytest.approx(light_from("left", 0.5)[1])


def test_echo_guard_forgets_after_its_window():
    guard = EchoGuard(window=0.0)
    guard.remember("yaw", 0.3)
    assert guard.classify("yaw", 0.3, 0.05) == (False, None)


def test_preview_mesh_reuses_vertices_and_stays_a_mesh(explorer):
    vertices = explorer.model.mean_shape.view(-1, 3)
    index, faces = preview_mesh(vertices, explorer.model.faces, max_vertices=len(vertices) // 2)
    assert len(vertices) // 4 <= len(index) <= len(vertices) // 2 and len(set(index.tolist())) == len(index)
    assert faces.min() >= 0 and faces.max() < len(index) and len(faces) > len(index)
    assert (faces[:, 0] != faces[:, 1]).all() and (faces[:, 1] != faces[:, 2]).all()
    mesh = explorer.mesh_figure.data[0]
    assert len(mesh.x) == len(explorer.preview_index) <= 4000
    np.testing.assert_allclose(mesh.x, explorer.face.vertices[0, explorer.preview_index, 0].numpy())


def test_mask_picker_offers_only_resolutions_with_masks_and_bounds_the_channel():
    from sgpn.app.widgets import mask_figure, mask_picker

    masks = {(res, block): torch.rand(2, channels, res, res)
             for res, channels in ((16, 32), (32, 16), (64, 8)) for block in (0, 1)}
    lq = hq = torch.rand(2, 3, 64, 64)
    picker = mask_picker(masks, lq, hq)
    resolution, channel = picker.children[0].children[1], picker.children[1].children[1]
    assert list(resolution.options) == [16, 32, 64] and channel.max == 7
    resolution.value = 16
    assert channel.max == 31
    channel.value = 31
    resolution.value = 64  # the slider clamps the channel into the new range
    assert channel.max == 7 and channel.value == 7
    with pytest.raises(KeyError, match="4 px"):
        mask_figure(masks, lq, hq, face=0, resolution=4, block=1, channel=-1)
    with pytest.raises(ValueError, match="0..7"):
        mask_figure(masks, lq, hq, face=0, resolution=64, block=1, channel=8)


def test_the_explorer_opens_on_given_coefficients_and_resets_to_them(bfm_path):
    model = FaceModel(load_bfm(bfm_path))
    fitted = model.random_coefficients(1, generator=torch.Generator().manual_seed(3))[0]
    explorer = CoefficientExplorer(model, image_size=64, coefficients=fitted)
    mean = CoefficientExplorer(model, image_size=64)
    assert torch.equal(explorer.coeffs[0], fitted) and explorer.image.value != mean.image.value
    assert explorer.sliders["id", 0].value == pytest.approx(float(np.clip(fitted[0], -3, 3)), abs=1e-6)
    explorer.sliders["exp", 0].value = 2.0   # another expression, then back to the fitted face
    explorer.reset_button.click()
    assert torch.equal(explorer.coeffs[0], fitted)
    explorer.set_coefficients(torch.zeros(257))
    assert explorer.coeffs.abs().sum() == 0 and all(s.value == 0 for s in explorer.sliders.values())
    with pytest.raises(ValueError, match="shows one face"):
        CoefficientExplorer(model, image_size=64, coefficients=torch.zeros(2, 257))
    with pytest.raises(ValueError, match="NaN"):
        explorer.set_coefficients(torch.full((257,), float("nan")))
