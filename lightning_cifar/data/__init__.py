"""CIFAR-10 in: the DataModule (uint8 tensors, a seeded split, batches), the official files read safely,
batched on-device augmentation, and folders of image files for ``predict``."""

from lightning_cifar.data.datamodule import CIFAR10DataModule

__all__ = ["CIFAR10DataModule"]
