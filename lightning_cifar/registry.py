"""The backbone registry: names mapped to factories through Python entry points.

Every backbone, our own built-ins included, is declared in a distribution's
metadata under the entry-point group ``lightning_cifar.backbones``::

    [project.entry-points."lightning_cifar.backbones"]
    my_net = "my_pkg.nets:build_my_net"

A factory is ``factory(num_classes: int = 10, **kwargs) -> torch.nn.Module``
(an ``nn.Module`` subclass with that signature qualifies) mapping a float batch
``(N, 3, 32, 32)`` to logits ``(N, num_classes)``.

Listing reads metadata only; a plugin's code is imported when its entry is
loaded, so one broken plugin never hides or breaks the others.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable

import torch
from torch import nn

from lightning_cifar.errors import (
    BackboneConfigError,
    BackboneLoadError,
    DuplicateBackboneError,
    LightningCifarError,
    UnknownBackboneError,
)

GROUP = "lightning_cifar.backbones"
INPUT_SHAPE = (3, 32, 32)

__all__ = [
    "GROUP",
    "BackboneEntry",
    "available",
    "create",
    "describe",
    "entries",
    "get",
]


@dataclass(frozen=True)
class BackboneEntry:
    """One registered backbone: its name, where it points, and who declared it."""

    name: str
    target: str
    distribution: str

    @classmethod
    def from_entry_point(cls, ep: EntryPoint) -> BackboneEntry:
        dist = getattr(ep, "dist", None)
        owner = f"{dist.name} {dist.version}" if dist is not None else "<unknown distribution>"
        return cls(name=ep.name, target=ep.value, distribution=owner)

    @property
    def origin(self) -> str:
        return f"backbone {self.name!r} ({self.target}, from {self.distribution})"

    def load(self) -> Callable[..., nn.Module]:
        """Import the factory; any failure is reported as this entry's fault."""
        try:
            factory = EntryPoint(self.name, self.target, GROUP).load()
        except Exception as exc:  # a plugin may fail in any way at import time
            raise BackboneLoadError(f"{self.origin} failed to import: {type(exc).__name__}: {exc}") from exc
        if not callable(factory):
            raise BackboneLoadError(f"{self.origin} is not callable (got {type(factory).__name__})")
        return factory

    @cached_property
    def description(self) -> str:
        """The first line of the factory's docstring."""
        doc = inspect.getdoc(self.load()) or ""
        return doc.strip().splitlines()[0] if doc.strip() else "(no description)"


def entries() -> dict[str, list[BackboneEntry]]:
    """Every name in the group with the entries that claim it (more than one is a conflict)."""
    found: dict[str, list[BackboneEntry]] = {}
    for ep in entry_points(group=GROUP):
        entry = BackboneEntry.from_entry_point(ep)
        claims = found.setdefault(entry.name, [])
        if entry not in claims:
            claims.append(entry)
    return dict(sorted(found.items()))


def available(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style wildcard, e.g. ``available("cnn_*")``."""
    return [name for name in entries() if fnmatch.fnmatchcase(name, pattern)]


def get(name: str) -> BackboneEntry:
    """The single entry registered under ``name``."""
    registered = entries()
    if name not in registered:
        names = list(registered)
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownBackboneError(
            f"unknown backbone {name!r}.{hint} Available: {', '.join(names) or '(none)'}"
            " (run 'lightning-cifar backbones' for details)"
        )
    claims = registered[name]
    if len(claims) > 1:
        who = " and ".join(f"{c.distribution} ({c.target})" for c in claims)
        raise DuplicateBackboneError(
            f"backbone name {name!r} is registered by more than one distribution: {who};"
            " uninstall one of them or rename its entry point"
        )
    return claims[0]


def describe(name: str) -> str:
    """One-line description of a registered backbone."""
    return get(name).description


def accepted_kwargs(factory: Callable[..., Any]) -> list[str] | None:
    """Names of the keyword arguments a factory takes, or ``None`` if it takes any."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def create(name: str, num_classes: int = 10, check: bool = True, **kwargs: Any) -> nn.Module:
    """Build the backbone ``name`` for ``num_classes`` classes.

    With ``check`` (the default) the module is run once on a zero batch to make
    sure it maps ``(2, 3, 32, 32)`` to ``(2, num_classes)``, so a misbehaving
    plugin is caught here rather than in the middle of training.
    """
    entry = get(name)
    factory = entry.load()
    accepted = accepted_kwargs(factory)
    if accepted is not None:
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            takes = ", ".join(a for a in accepted if a != "num_classes") or "(nothing)"
            raise BackboneConfigError(
                f"backbone {name!r} does not take {', '.join(map(repr, unknown))}; it takes: {takes}"
            )
    try:
        module = factory(num_classes=num_classes, **kwargs)
    except LightningCifarError:
        raise
    except Exception as exc:
        raise BackboneLoadError(f"{entry.origin} failed to build: {type(exc).__name__}: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise BackboneLoadError(f"{entry.origin} returned {type(module).__name__}, not a torch.nn.Module")
    if check:
        _check_output(entry, module, num_classes)
    return module


def _check_output(entry: BackboneEntry, module: nn.Module, num_classes: int) -> None:
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(2, *INPUT_SHAPE))
    except LightningCifarError:
        raise
    except Exception as exc:
        raise BackboneLoadError(
            f"{entry.origin} fails on a (2, 3, 32, 32) batch: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        module.train(was_training)
    shape = tuple(getattr(out, "shape", ()))
    if shape != (2, num_classes):
        raise BackboneLoadError(
            f"{entry.origin} maps a (2, 3, 32, 32) batch to {shape or type(out).__name__},"
            f" expected (2, {num_classes})"
        )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
