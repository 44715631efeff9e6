"""The backbone registry: one namespace of names mapped to factories, in the field's vocabulary
(torchvision's ``register_model`` / ``list_models`` / ``get_model``, timm's ``create_model``).

Two sources feed it:

* **code**: our built-ins, and anything a notebook or test registers, with the decorator::

      from lightning_cifar.registry import register_backbone

      @register_backbone("my_net")
      def my_net(num_classes: int = 10, **kwargs) -> nn.Module: ...

* **entry points** of other installed distributions, group ``lightning_cifar.backbones``::

      [project.entry-points."lightning_cifar.backbones"]
      my_net = "my_pkg.nets:build_my_net"

A factory is ``factory(num_classes: int = 10, **kwargs) -> torch.nn.Module`` (an
``nn.Module`` subclass with that signature qualifies) mapping a float batch
``(N, 3, 32, 32)`` to logits ``(N, num_classes)``. A backbone from outside this package
is run on small zero batches when it is built, so that one that breaks this contract is
named at once, not in the middle of training.

Entry-point metadata is read once per process (``refresh()`` reads it again, e.g. after
installing a plugin in a running notebook). Listing reads metadata only; a plugin's code is
imported when its entry is used, so one broken plugin never hides or breaks the others. A
name claimed twice, by two distributions or by a distribution and the code, is an error
naming both claims.

The names of 0.2 (``register``, ``unregister``, ``available``, ``get``, ``create``,
``describe``, ``count_parameters``, ``INPUT_SHAPE``) still work in 0.3, with a
``DeprecationWarning`` naming the new one; they go in 0.4.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable

from lightning_cifar.models import measure
from lightning_cifar.models._registry import (
    GROUP,
    BackboneEntry,
    create_backbone,
    describe_backbone,
    entries,
    get_backbone_entry,
    list_backbones,
    refresh,
    register_backbone,
    unregister_backbone,
)

__all__ = [
    "GROUP",
    "BackboneEntry",
    "create_backbone",
    "describe_backbone",
    "entries",
    "get_backbone_entry",
    "list_backbones",
    "refresh",
    "register_backbone",
    "unregister_backbone",
]


def _renamed(old: str, new: Callable[..., Any], where: str = "lightning_cifar.registry") -> Callable[..., Any]:
    @functools.wraps(new)
    def alias(*args: Any, **kwargs: Any) -> Any:
        warnings.warn(f"lightning_cifar.registry.{old} is deprecated; use {where}.{new.__name__}"
                      " (the old name goes in 0.4)", DeprecationWarning, stacklevel=2)
        return new(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old
    return alias


register = _renamed("register", register_backbone)
unregister = _renamed("unregister", unregister_backbone)
available = _renamed("available", list_backbones)
get = _renamed("get", get_backbone_entry)
create = _renamed("create", create_backbone)
describe = _renamed("describe", describe_backbone)
count_parameters = _renamed("count_parameters", measure.count_parameters, "lightning_cifar.models.measure")


def __getattr__(name: str) -> Any:
    if name == "INPUT_SHAPE":
        warnings.warn("lightning_cifar.registry.INPUT_SHAPE is deprecated; use"
                      " lightning_cifar.models.measure.IMAGE_SHAPE (the old name goes in 0.4)",
                      DeprecationWarning, stacklevel=2)
        return measure.IMAGE_SHAPE
    raise AttributeError(f"module 'lightning_cifar.registry' has no attribute {name!r}")
