"""The networks: the built-in backbones (``convpool``, ``mlp``, the whitening layer), their registration
(``builtins``), the registry's internals (``_registry``; users import :mod:`lightning_cifar.registry`),
and what a network costs (``measure``)."""

from lightning_cifar.models.convpool import ConvPoolNet
from lightning_cifar.models.mlp import MLP

__all__ = ["MLP", "ConvPoolNet"]
