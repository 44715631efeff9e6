"""lightning-cifar: hand-written CNNs and MLP baselines on CIFAR-10 with PyTorch Lightning."""

from __future__ import annotations

import importlib
from typing import Any

import jsonargparse

__version__ = "0.2.0"

# A checkpoint's hyperparameters are parsed by jsonargparse (LightningCLI's --ckpt_path, and
# load_from_checkpoint through Lightning's instantiator). `backbone_kwargs` is a dict of `Any`,
# and jsonargparse would build any {"class_path": ..., "init_args": ...} found there: a
# checkpoint of plain dicts and strings could run `subprocess.Popen`. Never build classes
# named inside `Any` values, in any parser of this process.
jsonargparse.set_parsing_settings(instantiate_subclass_spec_in_any=False, validate_subclass_spec_in_any=False)

# Imported on first use: `lightning-cifar backbones` and `summary` need torch only, not
# Lightning (whose import takes seconds).
_LAZY = {
    "CIFAR10DataModule": "lightning_cifar.data.datamodule",
    "Classifier": "lightning_cifar.training.classifier",
    "LightningCifarError": "lightning_cifar.errors",
    "registry": "lightning_cifar.registry",
}

__all__ = ["CIFAR10DataModule", "Classifier", "LightningCifarError", "registry", "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lightning_cifar' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if name == "registry" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
