"""Data: sources decode images to uint8 arrays; the DataModule serves them from device memory."""

from cifar_lab.data.datamodule import CIFARDataModule

__all__ = ["CIFARDataModule"]
