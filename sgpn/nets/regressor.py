"""The coefficient regressor of the shape restoration module (D3DFR's ``ReconNetWrapper``).

A torchvision ResNet-50 without its classifier gives a 2048-d pooled feature; seven 1x1
convolutions on it, initialised to zero, predict the parts of the 257-d 3DMM vector, which are
concatenated in the storage order of :mod:`sgpn.face3d.coefficients`::

    identity 80 | expression 64 | texture 80 | angles 3 | lighting 27 | translation xy 2 | z 1

Parameter names (``backbone.*``, ``final_layers.0..6.*``) are D3DFR's, so its checkpoints
(a dict with ``net_recon``) and the SGPN release's fine-tuned ``d3dfr_finetune_ours.pth``
(a bare state dict) load directly.

Input convention: RGB in [0, 1], 224 x 224, face aligned to D3DFR's crop (see
:mod:`sgpn.nets.shape_prior` for getting there from an SGPN crop).

For small CPU configurations the backbone and the input size can be changed
(``CoefficientRegressor(backbone="resnet18_2stages", input_size=64)``): the backbones pool
adaptively, so any size works, and the heads keep their names and order. Only the default
(ResNet-50 at 224) loads D3DFR's and the release's weights.
"""

from __future__ import annotations

import os

import torch
import torchvision
from torch import nn

from sgpn.images import RANGE_TOLERANCE, check_images
from sgpn.weights import load_strict, read_state_dict

#: Output sizes of the seven heads, in storage order (translation is split into xy and z).
HEAD_SIZES = (80, 64, 80, 3, 27, 2, 1)
#: D3DFR's input resolution.
INPUT_SIZE = 224
FEATURE_DIM = 2048
#: torchvision backbones the regressor can use, with the width of their pooled feature.
#: ResNet-50 is D3DFR's. "resnet18_2stages" keeps ResNet-18's stem and first two stages
#: (0.7 M parameters instead of 11 M): fast enough for 64 px CPU training, with checkpoints
#: small enough to commit (the kit's teacher uses it).
BACKBONES: dict[str, int] = {"resnet50": FEATURE_DIM, "resnet18": 512, "resnet18_2stages": 128,
                             "shufflenet_v2_x0_5": 1024}
#: Keys under which training checkpoints keep the network's state dict.
CHECKPOINT_KEYS = ("net_recon", "state_dict")


def build_backbone(name: str) -> nn.Module:
    """A randomly initialised torchvision backbone whose output is its pooled feature."""
    if name not in BACKBONES:
        raise ValueError(f"unknown regressor backbone {name!r}; choose from {sorted(BACKBONES)}")
    backbone = getattr(torchvision.models, name.removesuffix("_2stages"))(weights=None)
    backbone.fc = nn.Identity()  # the pooled feature; no classifier in the state dict (ResNet, ShuffleNet)
    if name.endswith("_2stages"):
        backbone.layer3 = nn.Identity()
        backbone.layer4 = nn.Identity()
    return backbone


class CoefficientRegressor(nn.Module):
    """Backbone + seven zero-initialised 1x1 heads: RGB [0, 1] ``input_size``^2 -> ``B x 257``.

    The default, ResNet-50 at 224, is D3DFR's network.
    """

    def __init__(self, backbone: str = "resnet50", input_size: int = INPUT_SIZE):
        super().__init__()
        if int(input_size) != input_size or input_size < 32:
            raise ValueError(f"input_size must be an integer >= 32, got {input_size!r}")
        self.backbone_name = backbone
        self.input_size = int(input_size)
        self.feature_dim = BACKBONES.get(backbone, 0)
        self.backbone = build_backbone(backbone)
        self.final_layers = nn.ModuleList(nn.Conv2d(self.feature_dim, n, 1) for n in HEAD_SIZES)
        for head in self.final_layers:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def extra_repr(self) -> str:
        return f"backbone={self.backbone_name}, input_size={self.input_size}"

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        check_images(image, "image", size=self.input_size, tolerance=RANGE_TOLERANCE)
        feature = self.backbone(image).reshape(image.shape[0], self.feature_dim, 1, 1)
        return torch.cat([head(feature) for head in self.final_layers], dim=1).flatten(1)

    def load_checkpoint(self, path: str | os.PathLike) -> "CoefficientRegressor":
        """Load D3DFR (``{"net_recon": ...}``) or SGPN (bare state dict) weights, strictly."""
        load_strict(self, read_state_dict(path, keys=CHECKPOINT_KEYS), str(path))
        return self

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kwargs) -> "CoefficientRegressor":
        return cls(**kwargs).load_checkpoint(path)
