"""What a reader of the committed notebooks relies on, checked on the files themselves: every
decimal the prose quotes is printed by a checked cell (which ``make test`` re-runs and compares,
tests/notebook_outputs.py), the widgets are saved with the notebook, nothing reads outside the
repository, and each file stays small enough to review."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from notebook_outputs import CHECK_TAG, NUMBER, numbers_agree

from sgpn.app.saved_widgets import compact_plotly_figures, finish_progress_text

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
MAX_BYTES = 5_000_000


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _output_texts(cell: dict):
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            yield _text(output["text"])
        for mime in ("text/plain", "text/markdown", "text/html"):
            if mime in output.get("data", {}):
                yield _text(output["data"][mime])


def _decimals(token: str) -> int:
    return len(token.lower().partition("e")[0].partition(".")[2])


def _value(token: str) -> float:
    return float(token.replace("−", "-").replace(",", ""))


def unsupported_numbers(notebook: dict) -> list[str]:
    """The decimals in the prose that no checked cell prints and no code cell writes, at the
    precision the prose quotes them (65.6 is supported by a printed 65.6467)."""
    shown = []
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        shown += NUMBER.findall(_text(cell["source"]))
        if CHECK_TAG in cell.get("metadata", {}).get("tags", []):
            for text in _output_texts(cell):
                shown += NUMBER.findall(text)
    values = [(_value(token), _decimals(token)) for token in shown]
    missing = []
    for cell in notebook["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        for token in NUMBER.findall(_text(cell["source"])):
            if "." not in token:
                continue
            quoted, places = abs(_value(token)), _decimals(token)
            if not any(places <= p and round(abs(v), places) == round(quoted, places) for v, p in values):
                missing.append(token)
    return missing


def test_numbers_agree_up_to_the_last_printed_digit():
    assert numbers_agree("FID 65.6467, SSIM 0.598", "FID 65.6468, SSIM 0.599")
    assert not numbers_agree("SSIM 0.598", "SSIM 0.600")
    assert not numbers_agree("4536 steps", "4537 steps")          # integers are exact
    assert not numbers_agree("PSNR 22.97 dB", "PSNR 22.97 dB (blind)")
    assert numbers_agree("1.2e-04", "1.3e-04") and not numbers_agree("1.2e-04", "1.4e-04")


def test_a_stale_checked_output_fails(pytester):
    """A checked cell whose committed output no longer matches what it prints fails nbval."""
    cell = {"cell_type": "code", "execution_count": 1, "id": "c0", "metadata": {"tags": [CHECK_TAG]},
            "source": "print(f'PSNR {22.9664:.4f} dB')",
            "outputs": [{"output_type": "stream", "name": "stdout", "text": "PSNR 22.9665 dB\n"}]}
    notebook = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    pytester.makefile(".ipynb", close=json.dumps(notebook))
    cell["outputs"][0]["text"] = "PSNR 22.9700 dB\n"
    pytester.makefile(".ipynb", stale=json.dumps(notebook))
    result = pytester.runpytest("--nbval-lax", "-p", "notebook_outputs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    assert "stale.ipynb" in "\n".join(line for line in result.outlines if "FAILED" in line)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_prose_quotes_only_checked_numbers(path):
    notebook = _read(path)
    assert any(CHECK_TAG in c.get("metadata", {}).get("tags", []) for c in notebook["cells"]), \
        f"{path.name} has no cell tagged {CHECK_TAG}"
    assert unsupported_numbers(notebook) == [], f"{path.name}: the prose quotes numbers no checked cell prints"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_widgets_are_saved_and_files_stay_small(path):
    notebook = _read(path)
    saved = notebook.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    shown = [output["data"][WIDGET_VIEW]["model_id"] for cell in notebook["cells"]
             for output in cell.get("outputs", []) if WIDGET_VIEW in output.get("data", {})]
    assert [m for m in shown if m not in saved] == [], f"{path.name} shows widgets whose state is not saved"
    assert path.stat().st_size <= MAX_BYTES, f"{path.name} is {path.stat().st_size / 1e6:.1f} MB"
    # saved as `make notebooks` leaves them: plotly figures drawable without a kernel, and
    # progress bars whose plain text is their final state
    rewritten = json.loads(json.dumps(notebook))
    compact_plotly_figures(rewritten), finish_progress_text(rewritten)
    assert rewritten == notebook, f"{path.name}: run python -m sgpn.app.saved_widgets on it (make notebooks)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_read_only_the_repository(path):
    code = "\n".join(_text(c["source"]) for c in _read(path)["cells"] if c["cell_type"] == "code")
    assert not re.search(r"""["'/]shared\b|\.\./""", code), f"{path.name} reads outside the repository"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_clean(path):
    """No tracebacks, nothing on stderr (warnings, loggers) and no bare object reprs
    (``<... at 0x7f...>``) in the committed outputs; a figure's repr beside its picture is fine."""
    noise = []
    for index, cell in enumerate(_read(path)["cells"]):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if output["output_type"] == "error" or output.get("name") == "stderr":
                noise.append(f"cell {index}: {output['output_type']} {output.get('name', '')}")
            elif re.search(r" at 0x[0-9a-f]+>", _text(data.get("text/plain", ""))) \
                    and not any(mime.startswith("image/") for mime in data):
                noise.append(f"cell {index}: {_text(data['text/plain'])[:60]}")
    assert noise == [], f"{path.name}: {noise}"
