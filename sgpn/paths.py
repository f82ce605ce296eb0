"""Every location the kit itself owns, in one place.

The kit runs from its checkout (``pip install -e .``): configs name ``kit_checkpoints/...``
relative to its root, and notebooks, figures and benchmarks read the committed files from it.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The kit's root folder (the checkout that holds ``sgpn/``), which configs name paths relative to.
KIT_ROOT = Path(__file__).resolve().parents[1]
#: The kit's own small trained models (``make checkpoints``, ``make ablation``, ``make frr``).
KIT_CHECKPOINTS = KIT_ROOT / "kit_checkpoints"
#: Training configs.
CONFIGS = KIT_ROOT / "configs"
#: The committed figures (``make figures``).
FIGURES = KIT_ROOT / "figures"


def resolve_kit_path(name: str | os.PathLike, beside: Path | None = None) -> Path:
    """An existing file named in a config or a checkpoint's hyper-parameters: as given, else
    relative to the kit's root (configs name ``kit_checkpoints/...`` relative to it, and a run
    may work in another folder), else beside ``beside`` (a checkpoint that names it)."""
    candidates = [Path(name), KIT_ROOT / name]
    if beside is not None:
        candidates.append(beside.parent / Path(name).name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = "as given, in the kit" + (", or beside the checkpoint" if beside is not None else "")
    raise FileNotFoundError(f"{name} was not found ({where})" + (f"; {beside} needs it" if beside else ""))
