"""The study configuration: one YAML file naming the base network, the recipe, the axes and the seeds."""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_cifar.config_files import read_yaml
from lightning_cifar.errors import LightningCifarError

SECTIONS = {"name", "base", "recipe", "axes", "baselines", "seeds"}
RECIPE_SECTIONS = {"trainer", "model", "data"}
# Set per run by the study itself, so a recipe may not fix them.
RESERVED_KEYS = {
    "model": {"backbone", "backbone_kwargs", "num_classes"},
    "trainer": {"logger", "callbacks", "enable_checkpointing", "default_root_dir"},
    "data": set(),
}


class StudyConfigError(LightningCifarError):
    """The study file cannot be read or does not describe a study."""


@dataclass(frozen=True)
class Axis:
    """One swept parameter of the base backbone, e.g. ``width_mult`` over 0.25 .. 4."""

    name: str
    param: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Baseline:
    """A network compared against the CNN axes, e.g. an MLP."""

    label: str
    backbone: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyConfig:
    name: str
    base_backbone: str
    base_kwargs: dict[str, Any]
    recipe: dict[str, dict[str, Any]]
    axes: tuple[Axis, ...]
    baselines: tuple[Baseline, ...]
    seeds: tuple[int, ...]
    source: str = ""


def recipe_keys() -> dict[str, list[str]]:
    """The keys a recipe section may set: the arguments ``lightning-cifar fit`` takes there, less the
    ones the study sets per run. (Values are checked by fit's own parser before the first run.)"""
    from pytorch_lightning import Trainer

    from lightning_cifar.data import CIFAR10DataModule
    from lightning_cifar.model import Classifier

    classes = {"trainer": Trainer, "model": Classifier, "data": CIFAR10DataModule}
    return {section: [name for name in inspect.signature(cls.__init__).parameters
                      if name != "self" and name not in RESERVED_KEYS[section]]
            for section, cls in classes.items()}


def _require(cond: bool, message: str, source: str) -> None:
    if not cond:
        raise StudyConfigError(f"{source}: {message}")


def parse_study(data: Any, source: str = "<study>") -> StudyConfig:
    """Validate a loaded YAML document; every problem names the key and what is allowed."""
    _require(isinstance(data, dict), "a study config is a mapping with keys " + ", ".join(sorted(SECTIONS)), source)
    unknown = set(data) - SECTIONS
    _require(not unknown, f"unknown key(s) {sorted(unknown)}; allowed: {sorted(SECTIONS)}", source)

    base = data.get("base") or {}
    _require(isinstance(base, dict) and isinstance(base.get("backbone"), str),
             "'base' needs 'backbone' (a registered name) and optional 'kwargs'", source)
    base_kwargs = base.get("kwargs") or {}
    _require(isinstance(base_kwargs, dict), "'base.kwargs' must be a mapping", source)

    recipe = data.get("recipe") or {}
    _require(isinstance(recipe, dict) and set(recipe) <= RECIPE_SECTIONS,
             f"'recipe' may only hold {sorted(RECIPE_SECTIONS)} (the sections of a fit config)", source)
    recipe = {k: dict(recipe.get(k) or {}) for k in sorted(RECIPE_SECTIONS)}
    allowed = recipe_keys()
    for section, values in recipe.items():
        clash = RESERVED_KEYS[section] & set(values)
        _require(not clash, f"'recipe.{section}' may not set {sorted(clash)}: the study sets them per run", source)
        for key in values:
            close = difflib.get_close_matches(key, allowed[section], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            _require(key in allowed[section], f"'recipe.{section}' has an unknown key {key!r}{hint}; allowed:"
                     f" {', '.join(allowed[section])}", source)

    axes = []
    for i, axis in enumerate(data.get("axes") or []):
        _require(isinstance(axis, dict) and {"name", "param", "values"} <= set(axis),
                 f"axes[{i}] needs 'name', 'param' and 'values'", source)
        values = axis["values"]
        _require(isinstance(values, list) and len(values) > 0, f"axes[{i}] ('{axis['name']}'): 'values' is empty", source)
        _require(axis["param"] not in base_kwargs,
                 f"axes[{i}] sweeps '{axis['param']}', which 'base.kwargs' also fixes", source)
        axes.append(Axis(str(axis["name"]), str(axis["param"]), tuple(values)))
    names = [a.name for a in axes]
    _require(len(set(names)) == len(names), f"axis names must be unique, got {names}", source)

    baselines = []
    for i, b in enumerate(data.get("baselines") or []):
        _require(isinstance(b, dict) and isinstance(b.get("backbone"), str),
                 f"baselines[{i}] needs 'backbone' and optional 'kwargs' and 'label'", source)
        baselines.append(Baseline(str(b.get("label", b["backbone"])), b["backbone"], dict(b.get("kwargs") or {})))

    seeds = data.get("seeds")
    _require(isinstance(seeds, list) and len(seeds) > 0 and all(isinstance(s, int) for s in seeds),
             "'seeds' must be a non-empty list of integers", source)
    _require(len(set(seeds)) == len(seeds), f"'seeds' has repeats: {seeds}", source)
    _require(bool(axes) or bool(baselines), "the study has no axes and no baselines: it would make zero runs", source)
    return StudyConfig(
        name=str(data.get("name") or Path(source).stem),
        base_backbone=base["backbone"],
        base_kwargs=dict(base_kwargs),
        recipe=recipe,
        axes=tuple(axes),
        baselines=tuple(baselines),
        seeds=tuple(seeds),
        source=source,
    )


def load_study(path: str | Path) -> StudyConfig:
    return parse_study(read_yaml(path, "study config", StudyConfigError), str(path))
