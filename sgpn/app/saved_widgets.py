"""Saved widget state that a viewer without a kernel can draw, in a notebook small enough to keep.

Two things a notebook saved with its widgets gets wrong, rewritten here after execution:
plotly figures (:func:`compact_plotly_figures`) and the text of progress bars
(:func:`finish_progress_text`).

plotly 6+ ships ``FigureWidget`` as an anywidget whose state carries plotly's whole widget script
(``_esm``, 5 MB), and a notebook saved with its widgets (as ``nbconvert --execute`` does) holds
a copy of it per figure. Its saved state also keeps the binary buffers of the last incremental
update (``_py2js_update``), whose own value is already reset to ``None``: a viewer that applies
the buffers to that path fails, and the figure is lost.

:func:`compact_plotly_figures` rewrites each saved figure so that a viewer draws it as saved:
the trace data and layout stay, the stale update buffers go, and the 5 MB script is replaced by
a few lines (:data:`SNAPSHOT_ESM`) that load the same plotly.js release from plotly's CDN
(the way plotly's own ``include_plotlyjs="cdn"`` pages do) and draw the saved figure with it.
A viewer offline shows a note of what is missing in the figure's place. In a running kernel the
figure is plotly's own FigureWidget; only the saved copy changes.

Run it on executed notebooks (``make notebooks`` does): ``python -m sgpn.app.saved_widgets notebooks/*.ipynb``.
"""

from __future__ import annotations

import argparse
import html
from pathlib import Path

import nbformat
from plotly.offline import get_plotlyjs_version

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PLOTLY_JS_URL = f"https://cdn.plot.ly/plotly-{get_plotlyjs_version()}.min.js"

#: Draws a saved plotly FigureWidget state with plotly.js from :data:`PLOTLY_JS_URL`. Numeric
#: arrays arrive as ``{dtype, shape, buffer: DataView}`` (plotly's widget serializer) and are
#: turned into typed arrays, which plotly.js draws directly.
SNAPSHOT_ESM = """
const PLOTLY_JS = "%(url)s";
const TYPED = {float64: Float64Array, float32: Float32Array, int32: Int32Array, uint32: Uint32Array,
               int16: Int16Array, uint16: Uint16Array, int8: Int8Array, uint8: Uint8Array};
function loadPlotly() {
  globalThis.__sgpnSavedPlotly ??= new Promise((resolve, reject) => {
    if (globalThis.Plotly) return resolve(globalThis.Plotly);
    const script = document.createElement("script");
    script.src = PLOTLY_JS;
    script.onload = () => resolve(globalThis.Plotly);
    script.onerror = () => { globalThis.__sgpnSavedPlotly = undefined; reject(new Error(PLOTLY_JS)); };
    document.head.appendChild(script);
  });
  return globalThis.__sgpnSavedPlotly;
}
function arrays(value) {
  if (Array.isArray(value)) return value.map(arrays);
  if (value && typeof value === "object" && !ArrayBuffer.isView(value)) {
    if (typeof value.dtype === "string" && ArrayBuffer.isView(value.buffer)) {
      const Typed = TYPED[value.dtype], view = value.buffer;
      return new Typed(view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength));
    }
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, arrays(item)]));
  }
  return value;
}
export default {
  render({ model, el }) {
    const layout = model.get("_widget_layout");
    const { width = 360, height = 360 } = layout;
    el.style.cssText = `width:${width}px;height:${height}px`;
    el.textContent = "loading plotly.js for the saved figure";
    loadPlotly().then(
      (Plotly) => { el.textContent = ""; Plotly.newPlot(el, arrays(model.get("_widget_data")), layout); },
      () => { el.textContent = `a saved plotly figure: this viewer could not load ${PLOTLY_JS} to draw it`; });
    return () => globalThis.Plotly?.purge(el);
  },
};
""" % {"url": PLOTLY_JS_URL}


def _saved_state(notebook: dict) -> dict:
    return notebook.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def _is_plotly_figure(model: dict) -> bool:
    return model.get("model_module") == "anywidget" and {"_widget_data", "_widget_layout", "_py2js_update"} <= model["state"].keys()


def compact_plotly_figures(notebook: dict) -> int:
    """Rewrites the notebook's saved plotly figures in place (see the module docstring);
    returns how many it rewrote."""
    figures = [model for model in _saved_state(notebook).values() if _is_plotly_figure(model)]
    for model in figures:
        model["state"]["_esm"] = SNAPSHOT_ESM
        buffers = [b for b in model.get("buffers", []) if b["path"][0] in ("_widget_data", "_widget_layout")]
        if buffers:
            model["buffers"] = buffers
        else:
            model.pop("buffers", None)
    return len(figures)


def _progress_text(saved: dict, model: dict) -> str | None:
    """tqdm's notebook bar (label, bar, counter) as the text tqdm prints, at its saved state."""
    children = [saved.get(child.removeprefix("IPY_MODEL_")) for child in model["state"].get("children", [])]
    if model["model_name"] != "HBoxModel" or None in children or \
            [c["model_name"] for c in children] != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
        return None
    label, bar, counter = (c["state"] for c in children)
    filled = round(10 * bar.get("value", 0) / bar.get("max", 1)) if bar.get("max") else 0
    text = f"{html.unescape(label.get('value', ''))}|{'█' * filled}{' ' * (10 - filled)}|{html.unescape(counter.get('value', ''))}"
    return text.replace("\u2007", " ")


def finish_progress_text(notebook: dict) -> int:
    """Sets the plain-text fallback of each saved progress bar (what a text-only viewer shows)
    to the bar's saved, final state; the kernel wrote it when the bar was first displayed
    ("0/?"). Returns how many it set."""
    saved = _saved_state(notebook)
    count = 0
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            text = view and view["model_id"] in saved and _progress_text(saved, saved[view["model_id"]])
            if text:
                output["data"]["text/plain"] = [text]
                count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    for path in parser.parse_args(argv).notebooks:
        notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        figures, bars = compact_plotly_figures(notebook), finish_progress_text(notebook)
        if figures or bars:
            nbformat.write(notebook, path)
            print(f"{path}: {figures} plotly figures drawn from {PLOTLY_JS_URL}, {bars} progress bars' text")


if __name__ == "__main__":
    main()
