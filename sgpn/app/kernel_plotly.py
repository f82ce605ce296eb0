"""A plotly FigureWidget that a notebook can save with its widgets and stay small and loadable.

plotly 6 ships FigureWidget as an anywidget whose state carries plotly's whole widget script
(``_esm``, 5 MB): one figure takes a notebook saved with its widgets past 5 MB.
:class:`KernelPlotlyFigure` keeps a few lines of script in its state, which ask the kernel for
plotly's (an anywidget command) and hand the figure to it: in JupyterLab and Voila it is
plotly's FigureWidget, and a viewer without a kernel shows a note in the figure's place, next
to the other widgets. Its trace data travels as base64 typed arrays inside the JSON rather than
as binary buffers, because nbconvert saves a stale copy of every buffer an update carried, and
a viewer cannot load a state holding them.
"""

from __future__ import annotations

from copy import deepcopy
from functools import cache

import numpy as np
import plotly.graph_objects as go
from _plotly_utils.utils import to_typed_array_spec
from anywidget.experimental import command
from plotly.serializers import _js_to_py, _py_to_js
from traitlets import Dict, List

#: The browser side of :class:`KernelPlotlyFigure`: asks the kernel for plotly's widget script
#: (once per page), then hands the model and the view to it. Until then, and for good in a
#: viewer without a kernel, the figure's place holds a note of the figure's size.
_KERNEL_PLOTLY_ESM = """
const NOTE = "3D preview: plotly draws it once a running kernel has sent plotly's script (5 MB, not saved in the notebook)";
function plotlyWidget(experimental) {
  globalThis.__sgpnPlotly ??= experimental.invoke("_plotly_script", null, {signal: AbortSignal.timeout(600000)})
    .then(([, [script]]) => import(URL.createObjectURL(new Blob([script], {type: "text/javascript"}))))
    .catch((error) => { globalThis.__sgpnPlotly = undefined; throw error; });
  return globalThis.__sgpnPlotly;
}
export default () => {
  let figure;
  return {
    initialize({ model, experimental }) {
      figure = plotlyWidget(experimental).then((module) => {
        const widget = module.default();
        widget.initialize({ model });
        return widget;
      });
      figure.catch(() => {});
    },
    render({ model, el, ...context }) {
      const { width = 360, height = 360 } = model.get("_widget_layout");
      el.style.cssText = `width:${width}px;height:${height}px;display:flex;align-items:center;` +
        "text-align:center;color:#777;font-size:12px;border:1px dashed #ccc;box-sizing:border-box;padding:12px";
      el.textContent = NOTE;
      let cleanup;
      figure.then((widget) => { el.style.cssText = ""; el.textContent = ""; cleanup = widget.render({ model, el, ...context }); },
                  () => {});
      return () => cleanup?.();
    },
  };
};
"""


def _typed_arrays_to_js(value, widget):
    """plotly's serializer, with 1-d numeric arrays as plotly.js's base64 typed arrays."""
    if isinstance(value, dict):
        return {key: _typed_arrays_to_js(item, widget) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_typed_arrays_to_js(item, widget) for item in value]
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "iuf":
        return to_typed_array_spec(value)
    return _py_to_js(value, widget)


_TYPED_ARRAYS = {"sync": True, "to_json": _typed_arrays_to_js, "from_json": _js_to_py}


@cache
def _plotly_widget_script() -> bytes:
    return str(go.FigureWidget._esm).encode()


class KernelPlotlyFigure(go.FigureWidget):
    """plotly's FigureWidget, its widget script sent by the kernel on request, never saved."""

    _esm = _KERNEL_PLOTLY_ESM
    # the traits that carry trace data
    _widget_data = List().tag(**_TYPED_ARRAYS)
    _py2js_addTraces = Dict(allow_none=True).tag(**_TYPED_ARRAYS)
    _py2js_restyle = Dict(allow_none=True).tag(**_TYPED_ARRAYS)
    _py2js_update = Dict(allow_none=True).tag(**_TYPED_ARRAYS)

    @command
    def _plotly_script(self, msg, buffers):
        """The script, after re-sending the figure as it is now: changes made before the script
        arrived found no listener in the browser (plotly does the same on display)."""
        self._widget_layout = deepcopy(self._layout_obj._props)
        self._widget_data = deepcopy(self._data)
        return None, [_plotly_widget_script()]
