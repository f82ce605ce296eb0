"""The notebooks and the app in a real browser: Debian's Chromium, driven by playwright, on
JupyterLab or Voila served on 127.0.0.1.

Shared by the browser tests (behaviour: one redraw per action, reset holds, the upload) and by
``sgpn bench browser`` (how fast a key press reaches the image and the mesh). Playwright is an
optional dependency (the ``test`` extra), imported only where a browser starts.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from jupyter_client import BlockingKernelClient

from sgpn.app.page import serve_command

#: Software WebGL (no GPU here) for plotly's mesh; the background-network switches keep
#: Chromium from calling out of a closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic"]
#: The notebook on show in JupyterLab (a workspace may reopen other notebooks in other tabs).
ACTIVE = ".jp-NotebookPanel:not(.lm-mod-hidden)"


class BrowserMissing(RuntimeError):
    """Chromium or playwright is not installed."""


def chromium_path() -> str:
    """``$SGPN_CHROMIUM``, else Chromium on the PATH."""
    path = os.environ.get("SGPN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise BrowserMissing("no Chromium found (apt-get install chromium, or set SGPN_CHROMIUM)")
    return path


@contextmanager
def chromium():
    """A headless Chromium (playwright's ``Browser``), closed on exit."""
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright  # optional: the test extra, only here
    except ImportError as error:
        raise BrowserMissing("playwright is not installed (pip install playwright)") from error
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A Jupyter server (JupyterLab or Voila) on 127.0.0.1, stopped by its process group."""

    def __init__(self, command: list[str], port: int, runtime: Path, cwd: Path, url: str, token: str = ""):
        self.port, self.runtime, self.url, self.token = port, runtime, url, token
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), "PYTHONWARNINGS": "ignore"}
        self.log = open(runtime / "server.log", "w")
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:  # the port answers (a page request would make Voila start a kernel)
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"server did not start: {(runtime / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)

    def kernel_files(self) -> set[Path]:
        return set(self.runtime.rglob("kernel-*.json"))

    def kernel(self, older: set[Path] = frozenset()):
        """A client of the newest kernel the server started (waiting for one not in ``older``:
        a notebook's page shows up before its kernel does), for checks in the kernel."""
        deadline = time.monotonic() + 120
        while not (files := sorted(self.kernel_files() - set(older), key=lambda p: p.stat().st_mtime)):
            if time.monotonic() > deadline:
                raise TimeoutError("the server started no new kernel")
            time.sleep(0.5)
        client = BlockingKernelClient(connection_file=str(files[-1]))
        client.load_connection_file()
        client.start_channels()  # no kernel_info wait: the shell may be busy with queued cells
        return client

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


def jupyterlab(folder: Path, notebooks: list[Path]) -> Server:
    """JupyterLab on copies of ``notebooks`` in ``folder``, with a fresh workspace and settings
    (nothing reopened from an earlier session) and every cell kept in the page."""
    for notebook in notebooks:
        shutil.copy(notebook, folder / notebook.name)
    (folder / "runtime").mkdir()
    # JupyterLab's windowing leaves cells out of view out of the page
    tracker = folder / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    port, token = free_port(), secrets.token_hex(16)
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", "--ServerApp.allow_root=True",
               f"--ServerApp.port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
               "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               f"--LabApp.workspaces_dir={folder / 'workspaces'}", f"--LabApp.user_settings_dir={folder / 'settings'}"]
    return Server(command, port, folder / "runtime", folder, f"http://127.0.0.1:{port}", token)


def voila(runtime: Path, cwd: Path) -> Server:
    """The kit's app (``sgpn app``) served by Voila."""
    port = free_port()
    return Server([*serve_command(port), f"--Voila.connection_dir_root={runtime}"], port, runtime, cwd,
                  f"http://127.0.0.1:{port}")


def kernel_value(client, expression: str, timeout: float = 60):
    """``expression`` evaluated in the kernel, as JSON."""
    outputs: list[str] = []

    def collect(message):
        if message["msg_type"] == "stream":
            outputs.append(message["content"]["text"])

    reply = client.execute_interactive(f"import json as _json; print(_json.dumps({expression}))", store_history=False,
                                       timeout=timeout, output_hook=collect)
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"the kernel could not evaluate {expression!r}: {reply['content']}")
    return json.loads("".join(outputs))


def run_all_accepted(page, kernel, timeout_s: float = 30) -> bool:
    """Whether the notebook took a Run All: a cell waits to run ([*]; the committed outputs
    already show numbers) or the kernel has run one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        queued = page.evaluate(f"""() => [...document.querySelectorAll('{ACTIVE} .jp-InputPrompt')]
            .some(p => p.textContent.includes('[*]'))""")
        if queued or kernel_value(kernel, "get_ipython().execution_count") > 1:
            return True
        page.wait_for_timeout(500)
    return False


def run_all(page, server: Server, notebook: Path, timeout_s: float = 600, screenshots: Path | None = None):
    """Open a notebook in JupyterLab, Run All, and wait until every cell has run (the kernel's
    execution count, read without adding to it); returns a client of its kernel."""
    older = server.kernel_files()
    # a workspace of its own: no notebook opened earlier is reopened beside it
    page.goto(f"{server.url}/lab/workspaces/{notebook.stem}/tree/{notebook.name}?token={server.token}")
    page.locator(f"{ACTIVE} .jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=120_000)
    kernel = server.kernel(older)
    code_cells = sum(c["cell_type"] == "code" for c in json.loads(notebook.read_text())["cells"])
    for attempt in range(3):  # a click that lands while the page is still settling may run nothing
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        if run_all_accepted(page, kernel):
            break
        if screenshots:
            page.screenshot(path=screenshots / f"{notebook.stem}_run_all_{attempt}.png")
    else:
        raise RuntimeError(f"{notebook.name}: Run All Cells queued no cell in three tries")
    deadline = time.monotonic() + timeout_s
    while (executed := kernel_value(kernel, "get_ipython().execution_count", timeout=timeout_s) - 1) < code_cells:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{notebook.name}: {executed} of {code_cells} cells ran (a cell failed?)")
        time.sleep(2)
    return kernel


#: Records when the explorer's image changes and when plotly finishes a redraw, and when a key
#: goes down, in the page's clock. Waits for the plot first: plotly may draw after the image.
WATCH = """async () => {
  const w = window.__sgpn = {img: [], plot: [], keys: []};
  const img = document.querySelector('img.widget-image');
  new MutationObserver(() => w.img.push(performance.now())).observe(img, {attributes: true, attributeFilter: ['src']});
  let plot;
  for (const start = performance.now(); !(plot = document.querySelector('.js-plotly-plot')); ) {
    if (performance.now() - start > 120000) throw new Error('no plotly figure after 120 s');
    await new Promise(resolve => setTimeout(resolve, 100));
  }
  plot.on('plotly_afterplot', () => w.plot.push(performance.now()));
  document.addEventListener('keydown', () => w.keys.push(performance.now()), true);
  return true;
}"""


def events_since(page, start: float) -> dict:
    return page.evaluate("(t) => ({img: window.__sgpn.img.filter(x => x > t), plot: window.__sgpn.plot.filter(x => x > t),"
                         " now: performance.now()})", start)


def settle(page, start: float, quiet_ms: float = 1500, timeout_ms: float = 20000) -> dict:
    """Wait for the image to change after ``start``, then until image and mesh have been quiet
    for ``quiet_ms``."""
    while True:
        events = events_since(page, start)
        last = max(events["img"] + events["plot"] + [start])
        if (events["img"] and events["now"] - last > quiet_ms) or events["now"] - start > timeout_ms:
            return events
        page.wait_for_timeout(100)


def press_latencies(page, presses: int = 10) -> tuple[list[float], list[float], list[int]]:
    """Key presses on the explorer's first slider (after :data:`WATCH` is installed): the
    milliseconds from each key-down to the new image and to the redrawn mesh, and the image
    updates each press caused."""
    handle = page.locator(".widget-slider .noUi-handle").first
    image_ms, mesh_ms, updates = [], [], []
    for press in range(presses):
        handle.focus()
        start = page.evaluate("performance.now()")
        handle.press("ArrowRight" if press % 2 == 0 else "ArrowLeft")
        events = settle(page, start, quiet_ms=800)
        key = page.evaluate("(t) => window.__sgpn.keys.filter(x => x > t)[0]", start)
        if not (events["img"] and events["plot"]):
            raise RuntimeError(f"press {press}: image redrawn at {events['img']}, mesh at {events['plot']}")
        image_ms.append(events["img"][0] - key)
        mesh_ms.append(events["plot"][0] - key)
        updates.append(len(events["img"]))
    return image_ms, mesh_ms, updates


def explorer_latencies(page, presses: int = 10) -> dict:
    """Median key-press-to-image and key-press-to-mesh milliseconds on a page showing the
    explorer."""
    page.locator("img.widget-image").first.scroll_into_view_if_needed()
    page.evaluate(WATCH)
    image_ms, mesh_ms, _ = press_latencies(page, presses)
    return {"image_ms": round(statistics.median(image_ms), 1), "mesh_ms": round(statistics.median(mesh_ms), 1)}
