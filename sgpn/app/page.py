"""The kit as a standalone web page: ``sgpn app`` (or ``make app``) serves ``app.ipynb`` with
Voila on localhost, and the page shows :func:`build_app`:

* "face model": the coefficient explorer (:class:`sgpn.app.widgets.CoefficientExplorer`);
* "restore a photo": upload a photo; its faces are detected, aligned and restored, and the page
  shows the boxes, each face's aligned crop, I_3d, restored crop and channel-mean AFFB mask, and
  the photo with the faces pasted back, with a progress bar while it works;
* "your face": upload a photo; its most probable face is fitted (:mod:`sgpn.photo.reconstruct`,
  with a progress bar), and a second explorer opens on the fitted coefficients beside the photo's
  face in the same frame: its sliders change the fitted face's expression, light or pose.

The restorer is the release's weights when ``$SGPN_OFFICIAL`` names their folder, else the
kit's tiny model (64 px, trained on synthetic faces: it shows the pipeline, not the paper's
quality on real photos).
"""

from __future__ import annotations

import html
import io
import os
import subprocess
import sys
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from sgpn.app.widgets import CoefficientExplorer, image_to_png
from sgpn.checkpoints import kit_model_notice, load
from sgpn.data.folder import READ_ERRORS, read_rgb
from sgpn.paths import KIT_CHECKPOINTS
from sgpn.photo.official import OFFICIAL_ENV
from sgpn.photo.reconstruct import photo_to_frame, reconstruct_photo, warp_into
from sgpn.photo.restore import restore_photo

#: The notebook Voila serves (shipped inside the package).
APP_NOTEBOOK = Path(__file__).with_name("app.ipynb")


def default_restorer():
    """The release's weights from ``$SGPN_OFFICIAL`` if set, else the kit's tiny SGPN."""
    return load(os.environ.get(OFFICIAL_ENV) or KIT_CHECKPOINTS / "sgpn_tiny.ckpt")


def restorer_notice(restorer) -> str | None:
    """What a visitor must read before the result: the kit's model blurs real faces (``None`` for
    the release's weights)."""
    checkpoint = getattr(restorer, "checkpoint", None)
    return kit_model_notice(checkpoint) if checkpoint else None


def photo_figure(photo, restored):
    """The photo with each face's box and five points, the restored photo, and one row per
    face: aligned crop, I_3d, restored crop and the channel-mean AFFB mask at the highest
    resolution (averaged over the block's two masks)."""
    faces = restored.faces
    fig = plt.figure(figsize=(8, 3.6 + 2 * len(faces)), layout="constrained")
    top, *rows = fig.subfigures(1 + len(faces), 1, height_ratios=[1.8] + [1] * len(faces)) if faces \
        else [fig]
    axes = top.subplots(1, 2)
    axes[0].imshow(photo.permute(1, 2, 0).clamp(0, 1))
    for face in faces:
        x0, y0, x1, y1 = face.box.tolist()
        axes[0].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1.5))
        axes[0].scatter(face.points[:, 0], face.points[:, 1], c="red", s=8)
    axes[0].set_title(f"{len(faces)} face(s) found", fontsize=9)
    axes[1].imshow(restored.image.permute(1, 2, 0).clamp(0, 1))
    axes[1].set_title("faces restored and pasted back", fontsize=9)
    for index, (face, row) in enumerate(zip(faces, rows)):
        resolution = max(r for r, _ in face.masks)
        mask = sum(m.mean(0) for (r, _), m in face.masks.items() if r == resolution) / 2
        panels = [(face.crop, "aligned crop"), (face.i3d, "I_3d"), (face.output, "restored"),
                  (mask, f"AFFB mask {resolution} px: {mask.min():.2f}–{mask.max():.2f}")]
        for ax, (image, title) in zip(row.subplots(1, 4), panels):
            ax.imshow(image.permute(1, 2, 0).clamp(0, 1) if image.dim() == 3 else image, cmap="viridis")
            ax.set_title(f"face {index + 1}: {title}", fontsize=8)
    for ax in fig.get_axes():
        ax.axis("off")
    return fig


def photo_panel(load_restorer=default_restorer):
    """Upload a photo and see it restored (the app's second tab). The restorer is loaded on the
    first upload; an unreadable file or a photo without a face is said in the status line."""
    upload = widgets.FileUpload(accept="image/*", multiple=False, description="photo")
    progress = widgets.IntProgress(value=0, min=0, max=1, description="progress")
    status = widgets.Label("upload a photo (JPEG or PNG) with one or more faces")
    notice = widgets.HTML("")  # what the loaded weights can do, above every result
    output = widgets.Output()
    restorer = []

    def on_face(done: int, total: int) -> None:
        progress.max, progress.value = total + 1, done + 1
        status.value = f"{total} face(s) found; restored {done} of {total}"

    def on_upload(change) -> None:
        if not change["new"]:
            return
        item = change["new"][0]
        progress.value, progress.max = 0, 1
        output.clear_output()
        try:
            photo = read_rgb(io.BytesIO(bytes(item["content"])))
        except READ_ERRORS as error:
            status.value = f"{item['name']} cannot be read as an image: {error}"
            return
        if not restorer:
            status.value = "loading the restorer..."
            restorer.append(load_restorer())
            text = restorer_notice(restorer[0])
            notice.value = f"<p style='color:#a33'><b>Note:</b> {html.escape(text)}</p>" if text else ""
        status.value = f"finding faces in {item['name']} ({photo.shape[2]}×{photo.shape[1]})..."
        result = restore_photo(restorer[0], photo, on_face=on_face)
        weights = "the kit's teaching model" if notice.value else "the release's weights"
        model = f"{restorer[0].size} px, {weights}"
        status.value = (f"{item['name']}: {len(result.faces)} face(s) restored ({model})" if result.faces
                        else f"{item['name']}: no face found (probability threshold 0.95)")
        progress.value = progress.max
        with output:
            figure = photo_figure(photo, result)
            display(figure)
            plt.close(figure)

    upload.observe(on_upload, names="value")
    return widgets.VBox([widgets.HBox([upload, progress]), status, notice, output])


def fit_panel(face_model=None):
    """Upload a photo, fit its most probable face, move the fitted face's sliders (the app's third
    tab). Returns the panel and its explorer."""
    upload = widgets.FileUpload(accept="image/*", multiple=False, description="photo")
    progress = widgets.IntProgress(value=0, min=0, max=1, description="fitting")
    status = widgets.Label("upload a photo (JPEG or PNG) with a face: its 257 coefficients are fitted to it")
    explorer = CoefficientExplorer(face_model)
    side = f"{explorer.renderer.image_size}px"
    # level with the explorer's image, below its row of buttons
    photo_face = widgets.Image(format="png", layout=widgets.Layout(width=side, height=side, flex="0 0 auto",
                                                                   margin="38px 4px 0 0"))

    def on_step(done: int, total: int) -> None:
        progress.max, progress.value = total, done

    def on_upload(change) -> None:
        if not change["new"]:
            return
        item = change["new"][0]
        progress.value = 0
        try:
            photo = read_rgb(io.BytesIO(bytes(item["content"]))).to(torch.float32)
            status.value = f"finding and fitting the face in {item['name']}..."
            faces = reconstruct_photo(explorer.model, photo, on_step=on_step)
        except READ_ERRORS as error:
            status.value = f"{item['name']} cannot be read as an image: {error}"
            return
        if not faces:
            status.value = f"{item['name']}: no face found (probability threshold 0.95)"
            return
        face = faces[0]
        matrix = photo_to_frame(face.points, explorer.renderer.image_size)
        photo_face.value = image_to_png(warp_into(photo, matrix, explorer.renderer.image_size))
        explorer.set_coefficients(face.coeffs)
        others = f" ({len(faces)} found: the most probable)" if len(faces) > 1 else ""
        status.value = (f"{item['name']}: face fitted in {face.fit_seconds:.1f} s{others}. Left: the photo's face; "
                        f"right: the fitted face, under the sliders (reset returns to the fit)")

    upload.observe(on_upload, names="value")
    return widgets.VBox([widgets.HBox([upload, progress]), status,
                         widgets.HBox([photo_face, explorer.widget], layout=widgets.Layout(align_items="flex-start"))]), explorer


def build_app(face_model=None, load_restorer=default_restorer):
    """The app's page: the explorer, the photo restorer and the fitted face in three tabs."""
    explorer = CoefficientExplorer(face_model)
    fitted, _ = fit_panel(explorer.model)
    tabs = widgets.Tab(children=[explorer.widget, photo_panel(load_restorer), fitted])
    tabs.titles = ("face model", "restore a photo", "your face")
    return tabs, explorer


def serve_command(port: int = 8866, open_browser: bool = False) -> list[str]:
    """The Voila command line that serves the app on 127.0.0.1 only."""
    command = [sys.executable, "-m", "voila", str(APP_NOTEBOOK), f"--port={port}", "--Voila.ip=127.0.0.1",
               "--theme=light"]
    return command if open_browser else command + ["--no-browser"]


def serve(port: int = 8866, open_browser: bool = False) -> int:
    """Run Voila until interrupted (``sgpn app``)."""
    print(f"serving the sgpn app on http://127.0.0.1:{port}/ (Ctrl-C stops it)")
    return subprocess.call(serve_command(port, open_browser))
