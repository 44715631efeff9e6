"""Built-in backbones. Importing this package registers them (``@registry.register``)."""

from lightning_cifar.backbones.convpool import ConvPoolNet
from lightning_cifar.backbones.mlp import MLP

__all__ = ["MLP", "ConvPoolNet"]
