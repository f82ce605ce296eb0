"""The app's photo tabs work headless: an upload is restored, or fitted, or refused with a clear status."""

import datetime
import io
from pathlib import Path

import matplotlib
import pytest
import torch

from sgpn.app.page import APP_NOTEBOOK, build_app, default_restorer, fit_panel, photo_figure, photo_panel, serve_command

PORTRAIT = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def upload(panel, name: str, content: bytes):
    """What a browser upload sets on the FileUpload widget."""
    widget = panel.children[0].children[0]
    widget.value = ({"name": name, "type": "", "size": len(content), "content": memoryview(content),
                     "last_modified": datetime.datetime.now(datetime.timezone.utc)},)


@pytest.fixture(scope="module")
def panel():
    return photo_panel()


def test_an_uploaded_photo_is_restored_with_progress_and_a_figure(panel):
    upload(panel, "portrait.jpg", PORTRAIT.read_bytes())
    progress, status = panel.children[0].children[1], panel.children[1]
    assert status.value.startswith("portrait.jpg: 1 face(s) restored (64 px, the kit's teaching model)")
    assert "blurs the face" in panel.children[2].value and "SGPN_OFFICIAL" in panel.children[2].value
    assert progress.value == progress.max == 2  # detection, then the one face


def test_the_photo_figure_shows_the_photo_the_result_and_each_faces_steps():
    from sgpn.data.folder import read_rgb
    from sgpn.photo.restore import restore_photo

    photo = read_rgb(PORTRAIT)
    restored = restore_photo(default_restorer(), photo)
    figure = photo_figure(photo, restored)
    titles = [ax.get_title() for ax in figure.get_axes()]
    assert titles[:2] == ["1 face(s) found", "faces restored and pasted back"]
    assert [t.split(": ")[1] for t in titles[2:5]] == ["aligned crop", "I_3d", "restored"]
    assert titles[5].startswith("face 1: AFFB mask 64 px")


def test_a_file_that_is_not_an_image_is_refused_by_name(panel):
    upload(panel, "notes.txt", b"not an image")
    assert panel.children[1].value.startswith("notes.txt cannot be read as an image")


def test_the_app_is_served_on_localhost_only():
    command = serve_command(9999)
    assert "--Voila.ip=127.0.0.1" in command and "--port=9999" in command and "--no-browser" in command
    assert Path(command[command.index("voila") + 1]) == APP_NOTEBOOK and APP_NOTEBOOK.is_file()


def test_your_face_tab_fits_the_upload_and_opens_the_explorer_on_it():
    from PIL import Image

    panel, explorer = fit_panel()
    upload(panel, "portrait.jpg", PORTRAIT.read_bytes())
    progress, status = panel.children[0].children[1], panel.children[1]
    assert status.value.startswith("portrait.jpg: face fitted in"), status.value
    assert progress.value == progress.max > 1
    fitted = explorer.coeffs.clone()
    assert fitted.abs().sum() > 0 and torch.equal(explorer.home, fitted)
    photo_face = panel.children[2].children[0]
    assert photo_face.value[:4] == b"\x89PNG"
    explorer.sliders["exp", 0].value = 2.0   # the fitted face smiles, then comes back
    assert not torch.equal(explorer.coeffs, fitted)
    explorer.reset_button.click()
    assert torch.equal(explorer.coeffs, fitted)

    sky = io.BytesIO()
    Image.new("RGB", (200, 160), (100, 150, 210)).save(sky, "PNG")
    upload(panel, "sky.png", sky.getvalue())
    assert status.value == "sky.png: no face found (probability threshold 0.95)"
    upload(panel, "notes.txt", b"not an image")
    assert status.value.startswith("notes.txt cannot be read as an image")
    assert torch.equal(explorer.coeffs, fitted)  # nothing replaced the last fit


def test_the_app_has_three_tabs():
    tabs, _ = build_app()
    assert tabs.titles == ("face model", "restore a photo", "your face")
