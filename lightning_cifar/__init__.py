"""lightning-cifar: hand-written CNNs and MLP baselines on CIFAR-10 with PyTorch Lightning."""

from lightning_cifar import registry
from lightning_cifar.data import CIFAR10DataModule
from lightning_cifar.errors import LightningCifarError
from lightning_cifar.model import Classifier

__version__ = "0.1.0"

__all__ = ["CIFAR10DataModule", "Classifier", "LightningCifarError", "registry", "__version__"]
