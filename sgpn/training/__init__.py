"""Training with Lightning: every LightningModule of the kit, its losses, callbacks and export.

``sgpn fit --config configs/....yaml`` drives these modules. Inference never imports this
subpackage: :func:`sgpn.load` reads their checkpoints into the inference modules of
:mod:`sgpn.nets`.
"""

import warnings

from sgpn.training.frr_module import FRRModule
from sgpn.training.sgpn_module import SGPNModule
from sgpn.training.teacher import TeacherModule

# The frozen teacher and face model are in eval mode on purpose; Lightning warns about any.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
# Lightning's pytree helper calls an API that this torch release deprecates (not the kit's code).
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")

__all__ = ["FRRModule", "SGPNModule", "TeacherModule"]
