"""Built-in backbones. Importing this package registers them (``@registry.register``)."""

from lightning_cifar.models.convpool import ConvPoolNet
from lightning_cifar.models.mlp import MLP

__all__ = ["MLP", "ConvPoolNet"]
