"""`sgpn figures` draws every figure from the kit's checkpoints (a few held-out faces here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgpn.evaluation.kit_models import VARIANTS
from sgpn.figures import FIGURES, make_figures
from sgpn.paths import KIT_CHECKPOINTS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not all((KIT_CHECKPOINTS / f).is_file() for f in VARIANTS.values()),
                    reason="kit checkpoints absent (make checkpoints, make ablation)")
def test_every_figure_is_drawn(tmp_path):
    written = make_figures(tmp_path, num_images=8)
    names = {p.name for p in written}
    assert {"pipeline.png", "degradations.png", "restoration.png", "affb_masks.png", "inpainting.png",
            "ablation.md", "ablation.csv", "ablation.svg", "shape_from_lq.md", "shape_from_lq.svg"} <= names
    assert all(p.stat().st_size > 0 for p in written)
    svg = (tmp_path / "ablation.svg").read_text()
    assert "<dc:date>" not in svg  # reproducible: no timestamp
    ratios = json.loads((tmp_path / "affb_ratios.json").read_text())
    assert ratios["images"] == 8 and set(ratios["ratio"]) == {"16", "32", "64"}
    assert "| blind restoration | full SGPN |" in (tmp_path / "ablation.md").read_text()


def test_figures_readme_lists_every_figure():
    readme = (ROOT / "figures" / "README.md").read_text()
    for name in FIGURES:
        assert f"sgpn figures {name}" in readme, name


def test_unknown_figure_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown figure"):
        make_figures(tmp_path, ["nope"])
