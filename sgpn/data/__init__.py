"""Data: synthetic faces from the morphable model, folders of aligned faces, and the
LightningDataModule that degrades them on the fly."""

from sgpn.data.synthetic import SyntheticFaces

__all__ = ["SyntheticFaces"]
