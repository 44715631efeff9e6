"""Built-in backbones. They are registered through entry points in pyproject.toml."""

from lightning_cifar.backbones.convpool import ConvPoolNet
from lightning_cifar.backbones.mlp import MLP

__all__ = ["MLP", "ConvPoolNet"]
