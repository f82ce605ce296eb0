"""Data: synthetic faces from the morphable model, folders of aligned faces, the blind
degradations, and the LightningDataModule that degrades faces on the fly (``datamodule``)."""
