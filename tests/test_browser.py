"""The explorer, the AFFB mask picker and the Voila app in a real browser.

JupyterLab (and then Voila) runs on 127.0.0.1 with a token; Debian's Chromium, driven by
playwright-python, runs the notebooks and moves the sliders with the keyboard and the mouse.
The page is checked (image and mesh redrawn, one redraw per action, a square image) and so is
the kernel, through its connection file (the explorer's coefficients and update count).
Screenshots go to ``test-artifacts/browser/``.

Without Chromium or playwright the tests skip and say what is missing; CI sets
``SGPN_REQUIRE_BROWSER=1``, which turns that skip into a failure.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import pytest

from sgpn.app.browser import (
    ACTIVE,
    WATCH,
    BrowserMissing,
    chromium,
    jupyterlab,
    kernel_value,
    press_latencies,
    run_all,
    settle,
    voila,
)

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
REQUIRED = os.environ.get("SGPN_REQUIRE_BROWSER") == "1"
#: A guard on the explorer's latencies, milliseconds (median of 10 key presses), far above the
#: targets that ``sgpn bench browser`` measures (150 ms to the image, 250 ms to the mesh), which
#: machines of this kind meet or miss by load alone.
GUARD_MS = 1000


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        with chromium() as browser:
            yield browser
    except BrowserMissing as missing:
        if REQUIRED:
            pytest.fail(f"SGPN_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(str(missing))


def readout(text: str) -> float:
    """A slider's readout as a number (ipywidgets writes a minus sign, not a hyphen)."""
    return float(text.replace("\u2212", "-"))


def click_and_count(page, name: str) -> dict:
    start = page.evaluate("performance.now()")
    page.locator("button.widget-button", has_text=name).first.click()
    return settle(page, start)


def check_explorer(page, kernel, label: str) -> dict:
    """The explorer's browser checks on a page where it is shown; returns the latencies."""
    page.evaluate(WATCH)
    image = page.locator("img.widget-image").first
    box = image.bounding_box()
    assert abs(box["width"] - box["height"]) <= 1, f"the image is {box['width']}x{box['height']}, not square"
    tabs = [t.strip() for t in page.locator(".lm-TabBar-tabLabel").all_inner_texts()]
    for title in ("identity", "expression", "texture", "lighting", "pose"):
        titles = page.locator(".lm-TabBar-tabLabel", has_text=title)
        assert titles.count() and titles.first.evaluate("e => e.scrollWidth <= e.clientWidth"), f"tab {title!r} is cut ({tabs})"

    # one key press, one update of the image and of the mesh
    image_ms, mesh_ms, updates = press_latencies(page)
    assert updates == [1] * len(updates), f"updates per key press: {updates}"
    before = kernel_value(kernel, "explorer.updates") if kernel else None

    # a mouse drag: the kernel ends on the value the slider shows
    handle_box = page.locator(".widget-slider .noUi-handle").first.bounding_box()
    start = page.evaluate("performance.now()")
    page.mouse.move(handle_box["x"] + handle_box["width"] / 2, handle_box["y"] + handle_box["height"] / 2)
    page.mouse.down()
    for step in range(1, 6):
        page.mouse.move(handle_box["x"] + handle_box["width"] / 2 + 12 * step, handle_box["y"] + handle_box["height"] / 2)
        page.wait_for_timeout(30)
    page.mouse.up()
    dragged = settle(page, start)
    assert dragged["img"], "a mouse drag did not redraw the image"
    shown = readout(page.locator(".widget-slider .widget-readout").first.inner_text())
    if kernel:
        assert kernel_value(kernel, "explorer.coeffs[0, 0].item()") == pytest.approx(shown, abs=1e-6), \
            "after a drag the kernel holds another value than the slider shows"

    random = click_and_count(page, "random face")
    page.screenshot(path=ARTIFACTS / f"{label}_random_face.png")
    reset = click_and_count(page, "reset")
    assert len(random["img"]) == 1 and len(reset["img"]) == 1, \
        f"image updates: random face {len(random['img'])}, reset {len(reset['img'])}"
    readouts = page.locator(".widget-slider .widget-readout").all_inner_texts()
    assert all(readout(text) == 0 for text in readouts if text.strip()), f"readouts after reset: {readouts}"
    if kernel:
        state = kernel_value(kernel, "{'updates': explorer.updates, 'sum': explorer.coeffs.abs().sum().item()}")
        assert state["sum"] == 0, "the kernel's explorer is not at the mean face after reset"
        drag_updates = state["updates"] - before - 2
        assert drag_updates >= 1
    else:
        drag_updates = len(dragged["img"])
    return {"image_ms": statistics.median(image_ms), "mesh_ms": statistics.median(mesh_ms),
            "drag_shown": shown, "drag_updates": drag_updates}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    notebooks = [ROOT / "notebooks" / name for name in ("01_morphable_model.ipynb", "07_affb_masks.ipynb")]
    server = jupyterlab(tmp_path_factory.mktemp("lab"), notebooks)
    yield server
    server.stop()


def test_explorer_in_jupyterlab(browser, lab):
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    kernel = run_all(page, lab, ROOT / "notebooks" / "01_morphable_model.ipynb", screenshots=ARTIFACTS)
    page.wait_for_timeout(2000)  # late echoes of the cell that drives sliders from code
    state = kernel_value(kernel, "{'sum': explorer.coeffs.abs().sum().item(), 'sliders': "
                                 "[s.value for s in explorer.sliders.values()]}")
    assert state["sum"] == 0 and not any(state["sliders"]), "reset did not hold after Run All"
    page.locator("img.widget-image").first.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "lab_explorer.png")
    timings = check_explorer(page, kernel, "lab")
    (ARTIFACTS / "lab_latency.json").write_text(json.dumps(timings))
    print("JupyterLab explorer:", json.dumps(timings))
    assert timings["image_ms"] <= GUARD_MS and timings["mesh_ms"] <= GUARD_MS, timings
    kernel.stop_channels()
    page.close()


#: Counts the figures the AFFB mask picker draws into its output area.
WATCH_PICKER = """() => {
  const w = window.__picker = {figures: 0};
  const out = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .widget-output');
  new MutationObserver(records => { for (const r of records) for (const n of r.addedNodes)
    if (n.querySelector && n.querySelector('img')) w.figures++; }).observe(out, {childList: true, subtree: true});
  return true;
}"""


def test_mask_picker_in_jupyterlab(browser, lab):
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    kernel = run_all(page, lab, ROOT / "notebooks" / "07_affb_masks.ipynb", screenshots=ARTIFACTS)
    picker = page.locator(f"{ACTIVE} .widget-output").first
    picker.scroll_into_view_if_needed()
    page.evaluate(WATCH_PICKER)
    resolutions = kernel_value(kernel, "sorted({r for r, _ in restored.masks})")
    resolution = page.locator(f"{ACTIVE} .widget-dropdown select").first
    for choice in (resolutions[0], resolutions[-1]):
        drawn = page.evaluate("window.__picker.figures")
        resolution.select_option(label=str(choice))
        page.wait_for_function(f"window.__picker.figures > {drawn}", timeout=30_000)
        page.wait_for_timeout(1500)
        assert page.evaluate("window.__picker.figures") == drawn + 1, "one pick drew more than one figure"
        channels = kernel_value(kernel, f"restored.masks[({choice}, 1)].shape[1]")
        channel = page.locator(f"{ACTIVE} .widget-slider .noUi-handle").last
        assert int(float(channel.get_attribute("aria-valuemax"))) == channels - 1
    page.screenshot(path=ARTIFACTS / "lab_mask_picker.png")
    kernel.stop_channels()
    page.close()


@pytest.fixture(scope="module")
def voila_app(tmp_path_factory):
    server = voila(tmp_path_factory.mktemp("voila"), ROOT)
    yield server
    server.stop()


def test_app_in_voila(browser, voila_app):
    import matplotlib

    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    blocked = []  # anything not from the app's own server is refused: the page must not need it

    def route(request_route):
        if request_route.request.url.startswith(voila_app.url):
            request_route.continue_()
        else:
            blocked.append(request_route.request.url)
            request_route.abort()

    page.route("**/*", route)
    page.goto(voila_app.url)
    page.locator("img.widget-image").first.wait_for(timeout=240_000)
    page.screenshot(path=ARTIFACTS / "voila_explorer.png")
    timings = check_explorer(page, voila_app.kernel(), "voila")

    page.locator(".lm-TabBar-tabLabel", has_text="restore a photo").click()
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with page.expect_file_chooser() as chooser:
        page.locator(".widget-upload").first.click()
    chooser.value.set_files(photo)
    page.get_by_text("grace_hopper.jpg: 1 face(s) restored", exact=False).wait_for(timeout=120_000)
    assert page.get_by_text("blurs the face", exact=False).is_visible()  # said before the result
    progress = page.locator(".progress-bar").first
    assert progress.evaluate("e => e.style.width") == "100%"
    page.locator(".widget-output img").first.wait_for(timeout=60_000)
    page.screenshot(path=ARTIFACTS / "voila_photo.png", full_page=True)

    # your face: the upload is fitted, then a key press on a slider re-renders the fitted face
    page.locator(".lm-TabBar-tabLabel", has_text="your face").click()
    with page.expect_file_chooser() as chooser:
        page.locator(".widget-upload:visible").first.click()
    chooser.value.set_files(photo)
    page.get_by_text("grace_hopper.jpg: face fitted in", exact=False).wait_for(timeout=180_000)
    assert page.locator(".progress-bar:visible").first.evaluate("e => e.style.width") == "100%"
    images = page.locator("img.widget-image:visible")
    assert images.count() == 2  # the photo's face and the fitted face, side by side
    fitted = images.nth(1).get_attribute("src")
    page.locator(".noUi-handle:visible").first.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function("([img, before]) => img.getAttribute('src') !== before",
                           arg=[images.nth(1).element_handle(), fitted], timeout=30_000)
    page.screenshot(path=ARTIFACTS / "voila_your_face.png", full_page=True)
    (ARTIFACTS / "voila.json").write_text(json.dumps({**timings, "blocked_requests": blocked}, indent=1))
    print("Voila explorer:", json.dumps(timings), "| blocked outside requests:", blocked)
    assert timings["image_ms"] <= GUARD_MS and timings["mesh_ms"] <= GUARD_MS, timings
    page.close()


def test_saved_plotly_figure_draws_without_a_kernel(browser):
    """A FigureWidget's saved state, compacted as the committed notebooks are, draws its mesh in
    a page with no kernel: plotly.js comes from its CDN address (served here from plotly's own
    copy), the trace data from the saved buffers."""
    import base64

    import numpy as np
    import plotly
    import plotly.graph_objects as go
    from ipywidgets.widgets.widget import _remove_buffers

    from sgpn.app.saved_widgets import (
        PLOTLY_JS_URL,
        WIDGET_STATE,
        compact_plotly_figures,
    )

    points = np.random.default_rng(0).normal(size=(3, 50)).astype(np.float32)
    figure = go.FigureWidget(go.Mesh3d(x=points[0], y=points[1], z=points[2], alphahull=0))
    state, paths, buffers = _remove_buffers(figure.get_state())
    saved = [{"path": path, "encoding": "base64", "data": base64.b64encode(bytes(b)).decode()} for path, b in zip(paths, buffers)]
    saved.append({"path": ["_py2js_update", "style_data", "x", 0, "buffer"], "encoding": "base64", "data": saved[0]["data"]})
    state["_py2js_update"] = None
    notebook = {"metadata": {"widgets": {WIDGET_STATE: {"state": {"figure": {
        "model_module": "anywidget", "model_name": "AnyModel", "state": state, "buffers": saved}}}}}}
    assert compact_plotly_figures(notebook) == 1
    model = notebook["metadata"]["widgets"][WIDGET_STATE]["state"]["figure"]
    assert len(model["state"]["_esm"]) < 5000 and [b["path"][0] for b in model["buffers"]] == ["_widget_data"] * 3

    page = browser.new_page()
    bundled = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    page.route(PLOTLY_JS_URL, lambda route: route.fulfill(path=str(bundled), content_type="text/javascript"))
    page.set_content("<div id='figure'></div>")
    drawn = page.evaluate(
        """async ([esm, state, buffers]) => {
            for (const {path, data} of buffers) {   // what a widget manager does with saved buffers
                let target = state;
                for (const key of path.slice(0, -1)) target = target[key];
                const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                target[path.at(-1)] = new DataView(bytes.buffer);
            }
            const module = await import("data:text/javascript," + encodeURIComponent(esm));
            const el = document.getElementById("figure");
            module.default.render({ model: { get: (key) => state[key] }, el });
            for (let i = 0; i < 200 && !el._fullData; i++) await new Promise((r) => setTimeout(r, 50));
            const trace = el._fullData?.[0];
            return trace && { type: trace.type, x: Array.from(trace.x) };
        }""",
        [model["state"]["_esm"], model["state"], model["buffers"]],
    )
    page.close()
    assert drawn and drawn["type"] == "mesh3d"
    np.testing.assert_allclose(drawn["x"], points[0], rtol=1e-6)
