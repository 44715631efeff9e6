"""The registry's internals: the claims on each name, from code and from entry points, how a backbone is
loaded and built, and the check of a third-party backbone's output. Users import :mod:`lightning_cifar.registry`.

Entry-point metadata is read once per process (``refresh()`` reads it again, e.g. after installing a
plugin in a running notebook). Listing reads metadata only; a plugin's code is imported when its entry
is used, so one broken plugin never hides or breaks the others. A name claimed twice, by two
distributions or by a distribution and the code, is an error naming both claims.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import threading
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Optional, Sequence, TypeVar, Union

import torch
from torch import nn

from lightning_cifar import __version__
from lightning_cifar.errors import (
    BackboneConfigError,
    BackboneLoadError,
    DuplicateBackboneError,
    LightningCifarError,
    UnknownBackboneError,
)
from lightning_cifar.models.measure import IMAGE_SHAPE

GROUP = "lightning_cifar.backbones"
# Importing this module registers the built-in backbones (imported on the first lookup: it is not imported
# here, so that the built-ins can import this module).
BUILTINS_MODULE = "lightning_cifar.models.builtins"


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
    builtin: bool = field(default=False, compare=False)  # ours: its output is checked by our tests, not at each build

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


def _is_builtin(factory: Factory) -> bool:
    return (getattr(factory, "__module__", "") or "").startswith("lightning_cifar.")


def _code_owner(factory: Factory) -> str:
    if _is_builtin(factory):
        return f"lightning-cifar {__version__} (built in)"
    return f"code (module {getattr(factory, '__module__', '') or '?'})"


def register_backbone(name: str, factory: Optional[F] = None, *, replace: bool = False) -> Any:
    """Register ``factory`` under ``name``; as a decorator, ``@register_backbone("name")``.

    Registering the same definition again (a notebook cell run twice) replaces it;
    another factory under a taken name is an error unless ``replace=True``.
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise BackboneConfigError(f"backbone name {name!r}: must be a non-empty string without surrounding spaces")

    def add(fn: F) -> F:
        if not callable(fn):
            raise BackboneConfigError(f"register_backbone({name!r}, ...): {type(fn).__name__} is not callable")
        entry = BackboneEntry(name, target_of(fn), _code_owner(fn), fn, builtin=_is_builtin(fn))
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


def unregister_backbone(name: str) -> None:
    """Remove a backbone registered in code (entry points are removed by uninstalling their distribution)."""
    with _lock:
        if _in_code.pop(name, None) is None:
            raise UnknownBackboneError(f"unregister_backbone({name!r}): no backbone of that name was registered in code")


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


Patterns = Union[str, Sequence[str], None]


def _as_patterns(patterns: Patterns) -> list[str]:
    return [patterns] if isinstance(patterns, str) else list(patterns or [])


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def list_backbones(include: Patterns = None, exclude: Patterns = None) -> list[str]:
    """Registered names, sorted, that match any of the shell-style wildcards ``include`` (all names when
    none is given) and none of ``exclude``: ``list_backbones("cnn_*", exclude="cnn_seed")``, as torchvision's
    ``list_models``."""
    wanted, unwanted = _as_patterns(include) or ["*"], _as_patterns(exclude)
    return [name for name in entries() if _matches(name, wanted) and not _matches(name, unwanted)]


def get_backbone_entry(name: str) -> BackboneEntry:
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


def describe_backbone(name: str) -> str:
    """One-line description of a registered backbone."""
    return get_backbone_entry(name).description


def accepted_kwargs(factory: Callable[..., Any]) -> list[str] | None:
    """Names of the keyword arguments a factory takes, or ``None`` if it takes any."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def create_backbone(name: str, num_classes: int = 10, check: Optional[bool] = None, **kwargs: Any) -> nn.Module:
    """Build the backbone ``name`` for ``num_classes`` classes.

    With ``check`` the module is run on zero batches to make sure it maps ``(N, 3, 32, 32)`` to
    ``(N, num_classes)``, so a misbehaving plugin is caught here rather than in the middle of training.
    By default (``None``) only backbones from outside this package are checked: ours are checked by
    our tests, and a check costs four forward passes at every build.
    """
    entry = get_backbone_entry(name)
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
    if torch.get_default_dtype() != torch.float32:
        # Everything after (the data, the input standardisation, bf16 autocast) assumes float32 defaults.
        raise BackboneLoadError(f"{entry.origin} left torch's default dtype at {torch.get_default_dtype()}"
                                " (torch.set_default_dtype); lightning-cifar needs float32: set it back in the plugin")
    if check or (check is None and not entry.builtin):
        _check_output(entry, module, num_classes)
    return module


# The batch sizes the output check runs: two, so that an output whose shape depends on the batch size is caught.
PROBE_BATCHES = (2, 3)


def create_shapes_only(name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """The backbone built on PyTorch's meta device: shapes and parameter counts without allocating
    memory (and without the output check, which needs real numbers)."""
    with torch.device("meta"):
        return create_backbone(name, num_classes=num_classes, check=False, **kwargs)


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
        out = module(torch.zeros(n, *IMAGE_SHAPE))
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
    if not out.is_floating_point():
        raise BackboneLoadError(f"{entry.origin} returns {out.dtype} logits in {mode} mode; logits must be floating"
                                " point (a loss and its gradients need them)")
    if not bool(torch.isfinite(out).all()):
        raise BackboneLoadError(f"{entry.origin} returns NaN or infinite logits for a ({n}, 3, 32, 32) batch of zeros"
                                f" in {mode} mode, before any training: the network, not the learning rate")
