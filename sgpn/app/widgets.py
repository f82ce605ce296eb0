"""The coefficient explorer: sliders over the 257-d vector with a live render and 3D mesh.

Callbacks are plain Python methods, so the explorer also works headless: setting
``explorer.sliders["id", 0].value = 2.0`` updates ``explorer.coeffs``, the rendered image and
the plotly mesh data exactly as dragging the slider would.

In a browser, a slider that receives a value from the kernel snaps it to its step and sends the
snapped value back (ipywidgets 8.1: -0.3 returns as -0.2999999999999998). Those echoes are not
user actions: the explorer recognises them (:class:`EchoGuard`) so that one click gives one
update, drawn coefficients keep their exact values and a reset is not undone by late echoes.
Fast drags coalesce in the browser: while one value is on its way to the kernel, ipywidgets
holds back later ones and keeps only the newest. The 3D view draws a preview of about 4,000 of
the model's vertices (:func:`preview_mesh`), which a browser redraws quickly enough for a slider.
"""

from __future__ import annotations

import io
import time
from collections import deque

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import plotly.graph_objects as go
import torch
from IPython.display import display
from PIL import Image, ImageDraw

from sgpn.face3d import coefficients
from sgpn.face3d.face_model import LIGHT_DIRECTIONS, FaceModel, FaceOutput, load_face_model
from sgpn.face3d.renderer import Renderer
from sgpn.retouch.synthetic_retouch import DEFAULT_RANGES, LIMITS, LIPSTICKS, PARTS, Retouch, describe

#: Lighting sliders: label -> (SH band, sign), applied to every colour channel. A positive
#: slider lights the face from the side it names, as the viewer sees it (see
#: :data:`sgpn.face3d.face_model.LIGHT_DIRECTIONS` for the signs of D3DFR's basis).
LIGHT_CONTROLS: dict[str, tuple[int, float]] = {
    "ambient": (0, 1.0), **{f"light from {side}": LIGHT_DIRECTIONS[side] for side in ("above", "front", "left")}}
#: Pose sliders: (label, coefficient index within the 257 vector, range).
POSE_CONTROLS = (
    ("pitch", coefficients.SLICES["angles"].start + 0, 0.6),
    ("yaw", coefficients.SLICES["angles"].start + 1, 0.8),
    ("roll", coefficients.SLICES["angles"].start + 2, 0.6),
    ("move x", coefficients.SLICES["trans"].start + 0, 0.5),
    ("move y", coefficients.SLICES["trans"].start + 1, 0.5),
    ("move z", coefficients.SLICES["trans"].start + 2, 2.0),
)


def image_to_png(image: torch.Tensor, landmarks: torch.Tensor | None = None) -> bytes:
    """A ``(3, H, W)`` image in 0..1 (clipped for display only) as PNG bytes, with landmarks."""
    array = (image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
    picture = Image.fromarray(array)
    if landmarks is not None:
        draw = ImageDraw.Draw(picture)
        radius = max(1.0, image.shape[-1] / 160)
        for x, y in landmarks.detach().cpu().tolist():
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(40, 220, 90))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def hex_colors(colors: torch.Tensor) -> np.ndarray:
    """Per-vertex ``(N, 3)`` colours in 0..1 as '#rrggbb' strings (plotly's fast path).

    Built as ASCII bytes with numpy: formatting 30k strings in Python would dominate a
    texture slider's update.
    """
    rgb = (colors.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    chars = np.empty((rgb.shape[0], 7), dtype=np.uint8)
    chars[:, 0] = ord("#")
    chars[:, 1::2] = _HEX_DIGITS[rgb >> 4]
    chars[:, 2::2] = _HEX_DIGITS[rgb & 15]
    return chars.view("S7").ravel().astype("U7")


def preview_mesh(vertices: torch.Tensor, faces: torch.Tensor, max_vertices: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    """A coarse version of a mesh for interactive 3D views: ``(vertex_index, faces)``, where
    ``vertex_index`` picks at most ``max_vertices`` of the mesh's own vertices and ``faces``
    indexes into that selection.

    Vertex clustering on ``vertices`` (the mean shape): one representative vertex per cube of a
    grid, the cube size chosen by bisection; triangles keep their representatives and those that
    collapse are dropped. Because the preview reuses real vertices, any face the model draws is
    previewed by indexing its vertices, so the choice is made once. Written here because
    PyTorch3D has no mesh decimation, and browsers redraw a 31k-vertex plotly mesh too slowly
    (300-550 ms in software WebGL) for a slider.
    """
    vertices, faces = vertices.detach().double().cpu(), faces.long().cpu()
    if len(vertices) <= max_vertices:
        return torch.arange(len(vertices)), faces
    low, high = 0.0, (vertices.max(0).values - vertices.min(0).values).max().item()
    best = None
    for _ in range(30):  # until the count is within 5 % below max_vertices
        size = (low + high) / 2
        cells = torch.floor((vertices - vertices.min(0).values) / size).long()
        _, cluster = torch.unique(cells, dim=0, return_inverse=True)
        count = int(cluster.max()) + 1
        if count > max_vertices:
            low = size
        else:
            high, best = size, cluster
            if count >= 0.95 * max_vertices:
                break
    cluster = best
    count = int(cluster.max()) + 1
    # the representative of each cluster: its vertex nearest the cluster's centroid
    centroid = torch.zeros(count, 3, dtype=vertices.dtype).index_add_(0, cluster, vertices)
    centroid /= torch.bincount(cluster, minlength=count)[:, None]
    distance = (vertices - centroid[cluster]).norm(dim=1)
    order = torch.argsort(distance)
    first = torch.full((count,), len(vertices), dtype=torch.long).scatter_reduce(
        0, cluster[order], order, reduce="amin")
    coarse = cluster[faces]
    kept = (coarse[:, 0] != coarse[:, 1]) & (coarse[:, 1] != coarse[:, 2]) & (coarse[:, 0] != coarse[:, 2])
    coarse = coarse[kept]
    _, unique_rows = np.unique(np.sort(coarse.numpy(), axis=1), axis=0, return_index=True)
    return first, coarse[np.sort(unique_rows)]


class EchoGuard:
    """Tells a user's slider move from the browser's echo of a value the kernel set.

    The kernel remembers each value it puts on a slider for ``window`` seconds. A value that
    arrives from the browser within half a step of one of them is that value after the slider
    snapped it: an echo, to be ignored. A user cannot produce it, because the slider already
    shows that position. Echoes of older values (they can arrive after a newer one was set, as
    after ``reset()``) tell the kernel which value the slider must show again.
    """

    def __init__(self, window: float = 10.0):
        self.window = window
        self.sent: dict = {}

    def remember(self, key, value: float) -> None:
        """The kernel put ``value`` on slider ``key``."""
        now = time.monotonic()
        history = self.sent.setdefault(key, deque())
        history.append((float(value), now))
        while history and now - history[0][1] > self.window:
            history.popleft()

    def classify(self, key, value: float, step: float) -> tuple[bool, float | None]:
        """``(is_echo, value_to_restore)`` for ``value`` arriving from the browser on ``key``:
        the value to restore is the kernel's latest when the echo is of an older one."""
        now = time.monotonic()
        history = [v for v, t in self.sent.get(key, ()) if now - t <= self.window]
        if not any(abs(value - sent) <= step / 2 + 1e-9 for sent in history):
            return False, None
        latest = history[-1]
        return True, None if abs(value - latest) <= step / 2 + 1e-9 else latest


class CoefficientExplorer:
    """Sliders for the named id/exp/tex components, lighting and pose, a live image with
    landmarks, a plotly mesh (faces sent once; later updates send positions or colours only),
    and "random face" / "reset" buttons.

    The image shows the SH-lit colours the renderer produces; the 3D mesh shows the albedo,
    because plotly lights the mesh itself. So lighting sliders change only the image, texture
    sliders the mesh colours, and shape and pose sliders the mesh positions.

    ``coefficients`` ``(257,)`` or ``(1, 257)``: the face to open on (e.g. one fitted to a photo,
    :mod:`sgpn.face3d.fitting`); "reset" returns to it. Default: the mean face.
    """

    def __init__(self, face_model: FaceModel | None = None, image_size: int = 224,
                 slider_range: float = 3.0, seed: int = 0, coefficients: torch.Tensor | None = None):
        self.model = face_model or load_face_model()
        self.renderer = Renderer(image_size, backend="fast")
        self.home = self._checked(coefficients)
        self.coeffs = self.home.clone()
        self.generator = torch.Generator().manual_seed(seed)
        self.sliders: dict[tuple[str, int] | str, widgets.FloatSlider] = {}
        self._syncing = False
        self._echoes = EchoGuard()
        #: How many times the image and mesh were recomputed (one per user action).
        self.updates = 0
        self.face: FaceOutput | None = None
        self.preview_index, self.preview_faces = preview_mesh(self.model.mean_shape.view(-1, 3), self.model.faces)

        groups = {}
        for part in ("id", "exp", "tex"):
            names = self.model.component_names.get(part) or [f"{part} {i}" for i in range(6)]
            boxes = []
            for index, name in enumerate(names):
                slider = self._slider(name, -slider_range, slider_range)
                self.sliders[part, index] = slider
                boxes.append(slider)
            groups[part] = widgets.VBox(boxes)
        light = []
        for label in LIGHT_CONTROLS:
            self.sliders[label] = self._slider(label, -0.8, 0.8)
            light.append(self.sliders[label])
        pose = []
        for label, _, limit in POSE_CONTROLS:
            self.sliders[label] = self._slider(label, -limit, limit)
            pose.append(self.sliders[label])
        groups["light"], groups["pose"] = widgets.VBox(light), widgets.VBox(pose)

        self.random_button = widgets.Button(description="random face", icon="random")
        self.reset_button = widgets.Button(description="reset", icon="undo")
        self.random_button.on_click(lambda _: self.random_face())
        self.reset_button.on_click(lambda _: self.reset())

        # a fixed square box: in a flex row an image with height "auto" is stretched
        side = f"{image_size}px"
        self.image = widgets.Image(format="png", width=image_size, height=image_size,
                                   layout=widgets.Layout(width=side, height=side, min_width=side,
                                                         flex="0 0 auto", object_fit="contain"))
        self.mesh_figure = self._build_mesh_figure()
        tabs = widgets.Tab(children=[groups[k] for k in ("id", "exp", "tex", "light", "pose")],
                           layout=widgets.Layout(min_width="440px"))  # room for whole tab titles
        tabs.titles = ("identity", "expression", "texture", "lighting", "pose")
        self.widget = widgets.VBox([
            widgets.HBox([self.random_button, self.reset_button]),
            widgets.HBox([tabs, self.image, self.mesh_figure], layout=widgets.Layout(align_items="flex-start")),
        ])
        self._sync_sliders()
        self.update(shape=True, colors=True)

    @staticmethod
    def _checked(coeffs: torch.Tensor | None) -> torch.Tensor:
        if coeffs is None:
            return torch.zeros(1, coefficients.NUM_COEFFS)
        coeffs = coefficients.check_coefficients(coeffs, "coefficients").detach().float()
        if len(coeffs) != 1:
            raise ValueError(f"the explorer shows one face: coefficients must be (257,) or (1, 257), got {tuple(coeffs.shape)}")
        return coeffs.clone()

    def set_coefficients(self, coeffs: torch.Tensor) -> None:
        """Open on another face (``(257,)``): the sliders move to it and "reset" returns to it."""
        self.home = self._checked(coeffs)
        self.reset()

    # -- building blocks -------------------------------------------------------------------

    def _slider(self, label: str, low: float, high: float):
        slider = widgets.FloatSlider(value=0.0, min=low, max=high, step=0.05, description=label,
                                     continuous_update=True, style={"description_width": "120px"})
        slider.observe(self._on_slider, names="value")
        return slider

    def _build_mesh_figure(self):
        with torch.no_grad():
            face = self.model(self.coeffs)
        x, y, z = face.vertices[0, self.preview_index].T.numpy()
        i, j, k = self.preview_faces.T.numpy()
        figure = go.FigureWidget(
            data=[go.Mesh3d(x=x, y=y, z=-z, i=i, j=j, k=k,
                            vertexcolor=hex_colors(face.albedo[0, self.preview_index]),
                            flatshading=False, hoverinfo="skip")],
            layout=go.Layout(width=360, height=360, margin=dict(l=0, r=0, t=0, b=0),
                             scene=dict(aspectmode="data", camera=dict(eye=dict(x=0, y=0, z=2.2), up=dict(x=0, y=1, z=0)),
                                        xaxis_visible=False, yaxis_visible=False, zaxis_visible=False)),
        )
        return figure

    # -- callbacks (plain Python: headless tests set slider.value) ---------------------------

    def _on_slider(self, change) -> None:
        slider = change["owner"]
        key = next(k for k, s in self.sliders.items() if s is slider)
        # ipywidgets holds a value in _property_lock while it applies it from a browser message
        # (no public API says where a change came from)
        from_browser = "value" in slider._property_lock
        if not from_browser:
            self._echoes.remember(key, change["new"])
        if self._syncing:
            return
        if from_browser:
            echo, restore = self._echoes.classify(key, change["new"], slider.step)
            if echo:
                if restore is not None:
                    self._show(slider, restore)
                return
        self.set_from_slider(key, change["new"])

    def _show(self, slider, value: float) -> None:
        """Put ``value`` on a slider without acting on it."""
        self._syncing = True
        try:
            slider.value = value
        finally:
            self._syncing = False

    def set_from_slider(self, key, value: float) -> None:
        """Write one slider's value into the coefficients and refresh what it changes."""
        if isinstance(key, tuple):
            part, index = key
            self.coeffs[0, coefficients.SLICES[part].start + index] = value
            self.update(shape=part in ("id", "exp"), colors=part == "tex")
        elif key in LIGHT_CONTROLS:
            band, sign = LIGHT_CONTROLS[key]
            gamma = self.coeffs[0, coefficients.SLICES["gamma"]].view(3, 9)
            # the slider sets the band's mean over the colours and keeps each colour's tint
            gamma[:, band] += sign * value - gamma[:, band].mean()
            self.update(shape=False, colors=False)
        else:
            index = next(i for label, i, _ in POSE_CONTROLS if label == key)
            self.coeffs[0, index] = value
            self.update(shape=True, colors=False)

    def random_face(self) -> None:
        """Draw a plausible random face and move the sliders to match."""
        self.coeffs = self.model.random_coefficients(1, generator=self.generator)
        self._sync_sliders()
        self.update(shape=True, colors=True)

    def reset(self) -> None:
        """Back to the face the explorer opened on (the mean face, frontal, in D3DFR's default
        light, unless it was given another)."""
        self.coeffs = self.home.clone()
        self._sync_sliders()
        self.update(shape=True, colors=True)

    def _sync_sliders(self) -> None:
        """Move sliders to the coefficients (clipped to their ranges for display only) without
        acting on them: the coefficients keep their exact values."""
        self._syncing = True
        try:
            gamma = self.coeffs[0, coefficients.SLICES["gamma"]].view(3, 9)
            for key, slider in self.sliders.items():
                if isinstance(key, tuple):
                    value = self.coeffs[0, coefficients.SLICES[key[0]].start + key[1]]
                elif key in LIGHT_CONTROLS:
                    band, sign = LIGHT_CONTROLS[key]
                    value = sign * gamma[:, band].mean()
                else:
                    value = self.coeffs[0, next(i for label, i, _ in POSE_CONTROLS if label == key)]
                slider.value = float(np.clip(float(value), slider.min, slider.max))
        finally:
            self._syncing = False

    def update(self, shape: bool = True, colors: bool = True) -> None:
        """Recompute the face, re-render the image and send the changed mesh data to plotly:
        positions when ``shape`` changed, albedo colours when ``colors`` changed."""
        with torch.no_grad():
            self.face = self.model(self.coeffs, self.renderer.image_size)
            rendered = self.renderer(self.face, self.model.faces)
        self.updates += 1
        self.image.value = image_to_png(rendered.image[0], rendered.landmarks[0])
        mesh = self.mesh_figure.data[0]
        with self.mesh_figure.batch_update():
            if shape:
                x, y, z = self.face.vertices[0, self.preview_index].T.numpy()
                mesh.x, mesh.y, mesh.z = x, y, -z
            if colors:
                mesh.vertexcolor = hex_colors(self.face.albedo[0, self.preview_index])


def mask_figure(masks: dict, lq: torch.Tensor, hq: torch.Tensor, face: int, resolution: int, block: int,
                channel: int):
    """LQ, GT and one AFFB mask of one face: the channel mean (``channel`` −1) or one channel.
    The mask's colours stretch over its own range, which the colour bar and title give."""
    if (resolution, block) not in masks:
        raise KeyError(f"no AFFB mask at {resolution} px, block {block}; there are {sorted(masks)}")
    mask = masks[(resolution, block)][face]
    if not -1 <= channel < mask.shape[0]:
        raise ValueError(f"channel must be -1 (mean) or 0..{mask.shape[0] - 1} at {resolution} px, got {channel}")
    picture = (mask.mean(0) if channel < 0 else mask[channel]).cpu()
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.4))
    for ax, image, title in ((axes[0], lq[face], "LQ"), (axes[1], hq[face], "GT")):
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu())
        ax.set_title(title, fontsize=8)
    shown = axes[2].imshow(picture, cmap="viridis", vmin=picture.min().item(), vmax=picture.max().item())
    fig.colorbar(shown, ax=axes[2], fraction=0.046)
    axes[2].set_title(f"M {resolution} px, block {block}, {'mean' if channel < 0 else f'channel {channel}'}: "
                      f"{picture.min():.2f}–{picture.max():.2f}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    return fig


def mask_picker(masks: dict, lq: torch.Tensor, hq: torch.Tensor, face: int = 0):
    """Sliders over faces, the resolutions and blocks that have AFFB masks, and their channels
    (the channel slider's range follows the resolution); the figure redraws below them."""
    resolutions = sorted({r for r, _ in masks})
    controls = {"face": widgets.IntSlider(face, 0, len(lq) - 1, description="face"),
                "resolution": widgets.Dropdown(options=resolutions, value=resolutions[-1], description="resolution"),
                "block": widgets.Dropdown(options=sorted({b for _, b in masks}), value=1, description="block"),
                "channel": widgets.IntSlider(-1, -1, 0, description="channel")}
    output = widgets.Output()

    def channels(resolution: int) -> int:
        return masks[(resolution, controls["block"].value)].shape[1]

    def redraw(_=None):
        controls["channel"].max = channels(controls["resolution"].value) - 1
        output.clear_output(wait=True)
        with output:
            figure = mask_figure(masks, lq, hq, **{name: c.value for name, c in controls.items()})
            display(figure)
            plt.close(figure)

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox(list(controls.values())[:2]), widgets.HBox(list(controls.values())[2:]),
                         output])


class RetouchSliders:
    """A slider per part of the synthetic retouch (:mod:`sgpn.retouch.synthetic_retouch`, each up to its limit)
    and the lipstick's colour, over one face: the raw face and its retouch side by side, and
    the retouch's caption. Headless like the explorer: setting ``controls[part].value``
    updates ``retouched``. ``face``: an item of :class:`~sgpn.data.synthetic.SyntheticFaces`."""

    def __init__(self, face: dict, params: dict | None = None, scale: int = 4):
        self.face, self.scale = face, scale
        start = params or {name: sum(span) / 2 for name, span in DEFAULT_RANGES.items()}
        self.controls = {name: widgets.FloatSlider(value=start.get(name, 0.0), min=0.0, max=LIMITS[name],
                                                   step=0.01, description=name, continuous_update=False)
                         for name in PARTS}
        self.controls["lipstick"] = widgets.Dropdown(options=list(LIPSTICKS), value=start.get("lipstick", "crimson"),
                                                     description="lipstick")
        self.image, self.caption = widgets.Image(format="png"), widgets.Label()
        for control in self.controls.values():
            control.observe(self.update, names="value")
        self.update()
        sliders = list(self.controls.values())
        self.widget = widgets.HBox([widgets.VBox(sliders), widgets.VBox([self.image, self.caption])])

    @property
    def params(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def update(self, _=None) -> None:
        face = self.face
        occluder = face.get("occluder_mask")
        self.retouched = Retouch.apply(face["hq"][None], face["landmarks"][None], face["face_mask"][None],
                                       [self.params], None if occluder is None else occluder[None]).image[0]
        pair = torch.cat([face["hq"], self.retouched], dim=2)
        pair = torch.nn.functional.interpolate(pair[None], scale_factor=self.scale, mode="nearest")[0]
        self.image.value = image_to_png(pair)
        self.caption.value = f"raw | retouched: {describe(self.params)}"
