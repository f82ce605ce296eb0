"""The official release's weights as one restorer: ``sgpn.pth`` (the 512 generator),
``d3dfr_finetune_ours.pth`` (the fine-tuned D3DFR ResNet-50) and the Basel Face Model.

:func:`load_official` builds the release's pipeline for aligned 512 crops: the crop goes to
D3DFR's 224 frame by the fixed similarity of the two templates, the ResNet-50 regresses the
257 coefficients, the BFM face is rendered at 224 and warped back to 512 (I_3d), and the
generator restores the crop. It is an :class:`~sgpn.nets.restorer.SGPNRestorer`, like a kit
model loaded by :func:`sgpn.load`, so ``sgpn restore --official DIR`` and notebook 09 use it in
place of a kit checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

from sgpn.face3d.face_model import load_face_model
from sgpn.nets.generator import SGPNGenerator
from sgpn.nets.regressor import CoefficientRegressor
from sgpn.nets.restorer import SGPNRestorer
from sgpn.nets.shape_prior import ShapePrior

#: The release's file names, relative to its ``checkpoints/`` folder.
GENERATOR_FILE = "sgpn.pth"
REGRESSOR_FILE = "d3dfr_finetune_ours.pth"
#: The BFM as the release names it, and as D3DFR does (same keys): both are accepted.
BFM_FILES = ("BFM/BFM09_model_info.mat", "BFM09_model_info.mat", "BFM/BFM_model_front.mat", "BFM_model_front.mat")
OFFICIAL_ENV = "SGPN_OFFICIAL"


def official_files(folder: str | os.PathLike) -> dict[str, Path]:
    """The generator, regressor and BFM files in ``folder`` (the release's ``checkpoints/``),
    or a ``FileNotFoundError`` naming every file that is missing."""
    folder = Path(folder)
    files = {"generator": folder / GENERATOR_FILE, "regressor": folder / REGRESSOR_FILE}
    missing = [str(path) for path in files.values() if not path.is_file()]
    bfm = next((folder / name for name in BFM_FILES if (folder / name).is_file()), None)
    if bfm is None:
        missing.append(f"{folder / BFM_FILES[0]} (or {', '.join(BFM_FILES[1:])})")
    if missing:
        raise FileNotFoundError(f"the official weights are incomplete in {folder}: missing {'; '.join(missing)}")
    return {**files, "bfm": bfm}


def load_official(folder: str | os.PathLike | None = None, generator_config="paper") -> SGPNRestorer:
    """The release's generator and shape prior from the files in ``folder`` (default:
    ``$SGPN_OFFICIAL``), as an :class:`~sgpn.nets.restorer.SGPNRestorer` in eval mode.
    ``generator_config``: the generator's :data:`sgpn.nets.generator.CONFIGS` name or config (the
    release's is ``"paper"``, 512 px)."""
    folder = folder if folder is not None else os.environ.get(OFFICIAL_ENV)
    if folder is None:
        raise FileNotFoundError(f"no folder with the official weights: pass one or set {OFFICIAL_ENV}")
    files = official_files(folder)
    generator = SGPNGenerator.from_checkpoint(files["generator"], generator_config)
    prior = ShapePrior(regressor=CoefficientRegressor.from_checkpoint(files["regressor"]),
                       face_model=load_face_model(files["bfm"]), alignment="template")
    return SGPNRestorer(generator, prior).eval()
