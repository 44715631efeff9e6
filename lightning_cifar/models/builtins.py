"""The built-in backbones, registered: the two configurable families and their named presets.

The registry imports this module on its first lookup. The backbones themselves (``convpool``, ``mlp``)
know nothing of the registry.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from lightning_cifar.models._registry import register_backbone
from lightning_cifar.models.convpool import ConvPoolNet
from lightning_cifar.models.mlp import MLP

register_backbone("convpool", ConvPoolNet)
register_backbone("mlp_net", MLP)


def preset(name: str, cls: type[nn.Module], doc: str, **defaults: Any) -> Callable[..., nn.Module]:
    """Register ``name``: a factory building ``cls`` with other defaults; every parameter stays overridable.

    The factory carries ``cls``'s signature with the preset's defaults, so the
    registry can tell users which keyword arguments it takes, and is named
    ``lightning_cifar.models.builtins:<name>``, as an entry point would name it.
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
    factory.__module__ = __name__
    return register_backbone(name, factory)


cnn_base = preset(
    "cnn_base",
    ConvPoolNet,
    "Conv-pool 32-64-128, kernels 7-5-3, batch norm, global pooling (about a CPU-minute per epoch).",
    widths=(32, 64, 128),
    kernels=(7, 5, 3),
)
cnn_wide = preset(
    "cnn_wide",
    ConvPoolNet,
    "cnn_base with twice the filters: 64-128-256, kernels 7-5-3.",
    widths=(64, 128, 256),
    kernels=(7, 5, 3),
)
cnn_deep = preset(
    "cnn_deep",
    ConvPoolNet,
    "cnn_base with twice the layers: two convolutions per block, 32-64-128, kernels 7-5-3.",
    widths=(32, 64, 128),
    kernels=(7, 5, 3),
    convs_per_block=2,
)
cnn_seed = preset(
    "cnn_seed",
    ConvPoolNet,
    "The seed notebook's best CNN: 16-32 | 64-128 filters, 3x3, dropout 0.25/0.25/0.5, dense 512.",
    widths=((16, 32), (64, 128)),
    kernels=(3, 3),
    norm=False,
    dropout=(0.25, 0.25),
    head="flatten",
    dense=(512,),
    head_dropout=0.5,
)
cnn_fast = preset(
    "cnn_fast",
    ConvPoolNet,
    "Fast recipe net: 64 | 192-192 | 384-384, kernels 5-3-3, pooling after each block's first conv (airbench-style).",
    widths=((64,), (192, 192), (384, 384)),
    kernels=(5, 3, 3),
    pool_position="first",
)
mlp_seed = preset("mlp_seed", MLP, "The seed notebook's MLP: 3072-128-64-32-10, ReLU.", hidden=(128, 64, 32))
mlp = preset(
    "mlp",
    MLP,
    "Stronger MLP baseline: 3072-1024-1024-1024-10, batch norm, GELU, dropout 0.2.",
    hidden=(1024, 1024, 1024),
    activation="gelu",
    norm="batch",
    dropout=0.2,
)
