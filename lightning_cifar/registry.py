"""The backbone registry: one namespace of names mapped to factories.

Two sources feed it:

* **code**: our built-ins, and anything a notebook or test registers, with the decorator::

      @registry.register("cnn_base")
      def cnn_base(num_classes: int = 10, **kwargs) -> nn.Module: ...

* **entry points** of other installed distributions, group ``lightning_cifar.backbones``::

      [project.entry-points."lightning_cifar.backbones"]
      my_net = "my_pkg.nets:build_my_net"

A factory is ``factory(num_classes: int = 10, **kwargs) -> torch.nn.Module`` (an
``nn.Module`` subclass with that signature qualifies) mapping a float batch
``(N, 3, 32, 32)`` to logits ``(N, num_classes)``.

Entry-point metadata is read once per process (``refresh()`` reads it again, e.g.
after installing a plugin in a running notebook). Listing reads metadata only; a
plugin's code is imported when its entry is used, so one broken plugin never
hides or breaks the others. A name claimed twice, by two distributions or by a
distribution and the code, is an error naming both claims.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import threading
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Optional, TypeVar

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
# Importing this module registers the built-in backbones.
BUILTINS_MODULE = "lightning_cifar.models"

__all__ = [
    "GROUP",
    "BackboneEntry",
    "available",
    "count_parameters",
    "create",
    "describe",
    "entries",
    "get",
    "refresh",
    "register",
    "unregister",
]

Factory = Callable[..., nn.Module]
F = TypeVar("F", bound=Factory)


def target_of(obj: Any) -> str:
    """``module:qualname``, the way an entry point names an object."""
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__name__)}"


@dataclass(frozen=True)
class BackboneEntry:
    """One claim on a name: where it points and who made it."""

    name: str
    target: str
    distribution: str
    factory: Optional[Factory] = field(default=None, compare=False, repr=False)

    @classmethod
    def from_entry_point(cls, ep: EntryPoint) -> BackboneEntry:
        dist = getattr(ep, "dist", None)
        owner = f"{dist.name} {dist.version}" if dist is not None else "<unknown distribution>"
        return cls(name=ep.name, target=ep.value, distribution=owner)

    @property
    def origin(self) -> str:
        return f"backbone {self.name!r} ({self.target}, from {self.distribution})"

    def load(self) -> Factory:
        """The factory; an entry point is imported now, and any failure is reported as its fault."""
        if self.factory is not None:
            return self.factory
        try:
            factory = EntryPoint(self.name, self.target, GROUP).load()
        # A plugin may fail in any way at import time, sys.exit() included; Ctrl-C stays the user's.
        except (Exception, SystemExit) as exc:
            raise BackboneLoadError(f"{self.origin} failed to import: {type(exc).__name__}: {exc}") from exc
        if not callable(factory):
            raise BackboneLoadError(f"{self.origin} is not callable (got {type(factory).__name__})")
        return factory

    @property
    def description(self) -> str:
        """The first line of the factory's docstring."""
        doc = inspect.getdoc(self.load()) or ""
        return doc.strip().splitlines()[0] if doc.strip() else "(no description)"


_lock = threading.RLock()
_in_code: dict[str, BackboneEntry] = {}
_from_metadata: Optional[dict[str, list[BackboneEntry]]] = None
_builtins_loaded = False


def _code_owner(factory: Factory) -> str:
    module = getattr(factory, "__module__", "") or ""
    if module.startswith("lightning_cifar."):
        from lightning_cifar import __version__

        return f"lightning-cifar {__version__} (built in)"
    return f"code (module {module or '?'})"


def register(name: str, factory: Optional[F] = None, *, replace: bool = False) -> Any:
    """Register ``factory`` under ``name``; as a decorator, ``@register("name")``.

    Registering the same definition again (a notebook cell run twice) replaces it;
    another factory under a taken name is an error unless ``replace=True``.
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise BackboneConfigError(f"backbone name {name!r}: must be a non-empty string without surrounding spaces")

    def add(fn: F) -> F:
        if not callable(fn):
            raise BackboneConfigError(f"register({name!r}, ...): {type(fn).__name__} is not callable")
        entry = BackboneEntry(name, target_of(fn), _code_owner(fn), fn)
        with _lock:
            known = _in_code.get(name)
            if known is not None and known.target != entry.target and not replace:
                raise DuplicateBackboneError(
                    f"backbone name {name!r} is already registered by {known.distribution} ({known.target});"
                    f" {entry.target} cannot take it (pass replace=True to replace it on purpose)"
                )
            _in_code[name] = entry
        return fn

    return add if factory is None else add(factory)


def unregister(name: str) -> None:
    """Remove a backbone registered in code (entry points are removed by uninstalling their distribution)."""
    with _lock:
        if _in_code.pop(name, None) is None:
            raise UnknownBackboneError(f"unregister({name!r}): no backbone of that name was registered in code")


def refresh() -> None:
    """Read the installed distributions' entry points again on the next lookup."""
    global _from_metadata
    with _lock:
        _from_metadata = None


def _metadata_entries() -> dict[str, list[BackboneEntry]]:
    global _from_metadata
    with _lock:
        if _from_metadata is None:
            found: dict[str, list[BackboneEntry]] = {}
            for ep in entry_points(group=GROUP):
                entry = BackboneEntry.from_entry_point(ep)
                claims = found.setdefault(entry.name, [])
                if entry not in claims:
                    claims.append(entry)
            _from_metadata = found
        return _from_metadata


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        importlib.import_module(BUILTINS_MODULE)
        _builtins_loaded = True


def entries() -> dict[str, list[BackboneEntry]]:
    """Every registered name with the claims on it (more than one claim is a conflict)."""
    _load_builtins()
    with _lock:
        merged = {name: [entry] for name, entry in _in_code.items()}
        for name, claims in _metadata_entries().items():
            mine = merged.setdefault(name, [])
            # Metadata left by an older install of this package may still point at a built-in:
            # the same object, so no conflict.
            mine.extend(c for c in claims if c.target not in {m.target for m in mine})
        return dict(sorted(merged.items()))


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
            f"backbone name {name!r} is claimed more than once: by {who};"
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
    except (Exception, SystemExit) as exc:
        raise BackboneLoadError(f"{entry.origin} failed to build: {type(exc).__name__}: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise BackboneLoadError(f"{entry.origin} returned {type(module).__name__}, not a torch.nn.Module")
    if check:
        _check_output(entry, module, num_classes)
    return module


# The batch sizes the output check runs: two, so that an output whose shape depends on the batch size is caught.
PROBE_BATCHES = (2, 3)


def create_shapes_only(name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """The backbone built on PyTorch's meta device: shapes and parameter counts without allocating
    memory (and without the output check, which needs real numbers)."""
    with torch.device("meta"):
        return create(name, num_classes=num_classes, check=False, **kwargs)


def _check_output(entry: BackboneEntry, module: nn.Module, num_classes: int) -> None:
    """Run the module in eval and in train mode on zero batches of two sizes, and check each output
    is one row of ``num_classes`` logits per image. The module's state (batch-norm statistics, its
    train/eval mode) and the random stream (dropout) are as they were afterwards."""
    was_training = module.training
    buffers = [(b, b.clone()) for b in module.buffers()]  # a forward changes buffers only (batch-norm statistics)
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            for mode in ("eval", "train"):
                module.train(mode == "train")
                for n in PROBE_BATCHES:
                    _check_batch(entry, module, num_classes, n, mode)
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        module.train(was_training)


def _check_batch(entry: BackboneEntry, module: nn.Module, num_classes: int, n: int, mode: str) -> None:
    try:
        out = module(torch.zeros(n, *INPUT_SHAPE))
    except LightningCifarError:
        raise
    except (Exception, SystemExit) as exc:
        raise BackboneLoadError(
            f"{entry.origin} fails on a ({n}, 3, 32, 32) batch in {mode} mode: {type(exc).__name__}: {exc}"
        ) from exc
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if shape != (n, num_classes):
        got = shape if shape is not None else type(out).__name__
        raise BackboneLoadError(
            f"{entry.origin} maps a ({n}, 3, 32, 32) batch in {mode} mode to {got}, expected a tensor"
            f" ({n}, {num_classes})"
        )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
