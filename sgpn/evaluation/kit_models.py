"""The kit's trained SGPN models (``make checkpoints``, ``make ablation``, ``make tasks``) by their table rows."""

from __future__ import annotations

from sgpn.checkpoints import load
from sgpn.nets.restorer import SGPNRestorer
from sgpn.paths import KIT_CHECKPOINTS

#: The kit's checkpoints (``make checkpoints``, ``make ablation``) and the ablation's rows.
VARIANTS = {"full SGPN": "sgpn_tiny.ckpt", "A: no F_3d": "sgpn_tiny_a_no_f3d.ckpt",
            "B: no AFFB": "sgpn_tiny_b_no_affb.ckpt", "C: no mesh losses": "sgpn_tiny_c_no_mesh_losses.ckpt"}
#: Kit models trained for one task other than blind restoration (the paper trains one model per
#: task), with the task each is evaluated on: ``{row name: (task, checkpoint file)}``.
TASK_MODELS = {"SGPN for inpainting": ("inpaint", "sgpn_tiny_inpaint.ckpt")}
#: The AFFB prior ladder (``make ladder``): variant C and the two models that differ from it only
#: in I_3d's coefficients, halfway to each face's true ones and the true ones themselves.
LADDER = {"C": "sgpn_tiny_c_no_mesh_losses.ckpt", "mix": "sgpn_tiny_ladder_mix.ckpt",
          "oracle": "sgpn_tiny_ladder_oracle.ckpt"}


def load_kit(name: str = "full SGPN") -> SGPNRestorer:
    """One of the kit's tiny SGPN checkpoints by its row name in :data:`VARIANTS` or
    :data:`TASK_MODELS` (eval mode)."""
    files = {**VARIANTS, **{row: file for row, (_, file) in TASK_MODELS.items()}}
    if name not in files:
        raise KeyError(f"unknown kit model {name!r}; choose from {', '.join(files)}")
    path = KIT_CHECKPOINTS / files[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: `make checkpoints` trains the full model, "
                                f"`make ablation` the variants and `make tasks` the task models")
    return load(path)
