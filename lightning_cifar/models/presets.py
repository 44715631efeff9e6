"""Helpers shared by the built-in backbones: activations and named presets."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from lightning_cifar import registry
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


def preset(name: str, cls: type[nn.Module], doc: str, **defaults: Any) -> Callable[..., nn.Module]:
    """Register ``name``: a factory building ``cls`` with other defaults; every parameter stays overridable.

    The factory carries ``cls``'s signature with the preset's defaults, so the
    registry can tell users which keyword arguments it takes, and is named
    ``<cls's module>:<name>``, as an entry point would name it.
    """

    def factory(num_classes: int = 10, **overrides: Any) -> nn.Module:
        return cls(num_classes=num_classes, **{**defaults, **overrides})

    signature = inspect.signature(cls)
    unknown = set(defaults) - set(signature.parameters)
    if unknown:
        raise TypeError(f"preset defaults {sorted(unknown)} are not parameters of {cls.__name__}")
    factory.__signature__ = signature.replace(
        parameters=[p.replace(default=defaults.get(p.name, p.default)) for p in signature.parameters.values()]
    )
    factory.__doc__ = doc
    factory.__qualname__ = factory.__name__ = name
    factory.__module__ = cls.__module__
    return registry.register(name, factory)
