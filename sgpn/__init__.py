"""sgpn: a runnable, teachable SGPN (blind face restoration with face shape and generative priors).

The names a notebook reader uses most; everything else lives in the subpackages
(``face3d``, ``nets``, ``data``, ``training``, ``evaluation``, ``photo``, ``retouch``, ``app``).
"""

from sgpn.checkpoints import load
from sgpn.face3d.face_model import FaceModel, load_face_model
from sgpn.face3d.renderer import Renderer
from sgpn.nets.restorer import Restored, SGPNRestorer

__version__ = "0.1.0"

__all__ = ["FaceModel", "Renderer", "Restored", "SGPNRestorer", "load", "load_face_model"]
