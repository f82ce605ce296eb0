"""Data: synthetic faces from the morphable model, folders of aligned faces, and the
LightningDataModule that degrades them on the fly."""

from sgpn.data.datamodule import DegradedFaces, EpochSampler, FaceDataModule, collate_faces
from sgpn.data.folder import FaceFolder, load_image
from sgpn.data.synthetic import SyntheticFaces

__all__ = ["DegradedFaces", "EpochSampler", "FaceDataModule", "FaceFolder", "SyntheticFaces",
           "collate_faces", "load_image"]
