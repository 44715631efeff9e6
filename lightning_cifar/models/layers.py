"""Layers shared by the built-in backbones: activations by name."""

from __future__ import annotations

from typing import Callable

from torch import nn

from lightning_cifar.errors import BackboneConfigError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "gelu": nn.GELU,
    "silu": lambda: nn.SiLU(inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.1, inplace=True),
}


def activation_layer(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise BackboneConfigError(f"activation={name!r}: allowed values are {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()
