"""The study configuration: one YAML file naming the base network, the recipe, the axes, the
baselines (each with its own recipe if it needs one), the tuning grids, the budget check, the
notebook anchors and the seeds.

Every swept or overridden setting is a path into ``lightning-cifar fit``'s configuration:
``model.lr``, ``data.augment``, ``trainer.max_epochs``, ``model.backbone_kwargs.width_mult``. A
path without a dot is a backbone keyword argument (``width_mult`` = ``model.backbone_kwargs.width_mult``).
"""

from __future__ import annotations

import copy
import difflib
import inspect
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pytorch_lightning import Trainer

from lightning_cifar.data.datamodule import CIFAR10DataModule
from lightning_cifar.errors import LightningCifarError
from lightning_cifar.files import read_yaml
from lightning_cifar.training.classifier import Classifier

SECTIONS = {"name", "notes", "base", "recipe", "axes", "baselines", "seeds", "tune", "budget", "anchors"}
RECIPE_SECTIONS = ("trainer", "model", "data")
# Set per run by the study itself, so a recipe may not fix them.
RESERVED_KEYS = {
    "model": {"backbone", "backbone_kwargs", "num_classes"},
    "trainer": {"logger", "callbacks", "enable_checkpointing", "default_root_dir"},
    "data": set(),
}
SCALES = ("linear", "log2", "categorical")
KINDS = ("width", "depth", "kernels", "other")
CNN_FAMILY = "cnn"  # the base network and every point of every axis


class StudyConfigError(LightningCifarError):
    """The study file cannot be read or does not describe a study."""


def full_path(path: str) -> str:
    """A setting's path in fit's configuration; a bare name is a backbone keyword argument."""
    return path if "." in path else f"model.backbone_kwargs.{path}"


def apply(config: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with every ``path: value`` of ``settings`` set (paths as in :func:`full_path`)."""
    config = copy.deepcopy(config)
    for path, value in settings.items():
        *parents, leaf = full_path(path).split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
            if node is None:
                raise StudyConfigError(f"cannot set {path}: {key} is empty")
        node[leaf] = copy.deepcopy(value)
    return config


@dataclass(frozen=True)
class Point:
    """One point of an axis: the value shown, and every setting it changes against the base."""

    axis: str
    value: Any
    param: str  # the swept setting, recorded explicitly (never inferred from the kwargs)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.axis}={self.value}"


@dataclass(frozen=True)
class Axis:
    """A swept setting, e.g. ``model.backbone_kwargs.width_mult`` over 0.25 .. 4."""

    name: str
    param: str
    kind: str
    scale: str
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Baseline:
    """A network compared against the CNNs, e.g. an MLP, with recipe settings of its own."""

    label: str
    backbone: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)  # path -> value, on top of the study's recipe


@dataclass(frozen=True)
class Tune:
    """A small grid searched on the validation split for one family: ``cnn`` (the base network,
    whose winner every axis point then uses) or a baseline's label."""

    family: str
    grid: dict[str, tuple[Any, ...]]
    seeds: tuple[int, ...]

    def candidates(self) -> list[dict[str, Any]]:
        keys = list(self.grid)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.grid[k] for k in keys))]


@dataclass(frozen=True)
class Budget:
    """A subset trained again at ``multiplier`` x the epochs, to see which conclusions survive; with ``tune``,
    the families named there have their recipe chosen again at that budget, on the validation split."""

    multiplier: int
    seeds: tuple[int, ...]
    points: tuple[str, ...]  # "base", "axis=value" labels or baseline labels
    tune: tuple[Tune, ...] = ()


@dataclass(frozen=True)
class Anchor:
    """A fit config trained as it is (the seed notebook's recipe), with the figure it should reproduce."""

    label: str
    config: str
    seeds: tuple[int, ...]
    reported: Optional[float] = None


@dataclass(frozen=True)
class StudyConfig:
    name: str
    base_backbone: str
    base_kwargs: dict[str, Any]
    recipe: dict[str, dict[str, Any]]
    axes: tuple[Axis, ...]
    baselines: tuple[Baseline, ...]
    seeds: tuple[int, ...]
    tune: tuple[Tune, ...] = ()
    budget: Optional[Budget] = None
    anchors: tuple[Anchor, ...] = ()
    notes: tuple[str, ...] = ()  # design decisions the report states (e.g. why a baseline was left out)
    source: str = ""

    @property
    def base_config(self) -> dict[str, Any]:
        """fit's configuration of the base network with the study's recipe (no seed)."""
        return {section: dict(self.recipe[section]) for section in RECIPE_SECTIONS} | {
            "model": {**self.recipe["model"], "backbone": self.base_backbone,
                      "backbone_kwargs": dict(self.base_kwargs)}}

    def families(self) -> list[str]:
        return [CNN_FAMILY, *(b.label for b in self.baselines)]


def recipe_keys() -> dict[str, list[str]]:
    """The keys a recipe section may set: the arguments ``lightning-cifar fit`` takes there, less the
    ones the study sets per run. (Values are checked by fit's own parser before the first run.)"""
    classes = {"trainer": Trainer, "model": Classifier, "data": CIFAR10DataModule}
    return {section: [name for name in inspect.signature(cls.__init__).parameters
                      if name != "self" and name not in RESERVED_KEYS[section]]
            for section, cls in classes.items()}


def _require(cond: bool, message: str, source: str) -> None:
    if not cond:
        raise StudyConfigError(f"{source}: {message}")


def check_path(path: str, where: str, source: str, allowed: dict[str, list[str]], swept: bool = True) -> str:
    """A setting path a study may sweep or override: a backbone kwarg, or a recipe key of fit."""
    path = full_path(str(path))
    section, _, rest = path.partition(".")
    if path.startswith("model.backbone_kwargs."):
        return path
    _require(section in RECIPE_SECTIONS and rest and "." not in rest,
             f"{where}: {path!r} is not a setting of fit (use trainer.X, model.X, data.X or a backbone"
             " keyword argument)", source)
    known = allowed[section]
    close = difflib.get_close_matches(rest, known, n=1)
    hint = f" (did you mean {section}.{close[0]!r}?)" if close else ""
    _require(rest in known, f"{where}: fit has no setting {path!r}{hint}; allowed in {section}: {', '.join(known)}",
             source)
    if swept:
        _require(rest not in ("backbone",), f"{where}: {path!r} cannot be swept; compare backbones as baselines",
                 source)
    return path


def _settings(value: Any, where: str, source: str, allowed: dict[str, list[str]]) -> dict[str, Any]:
    _require(isinstance(value, dict), f"{where} must be a mapping of setting: value", source)
    return {check_path(k, f"{where}.{k}", source, allowed): v for k, v in value.items()}


def _seeds(value: Any, where: str, source: str) -> tuple[int, ...]:
    _require(isinstance(value, list) and len(value) > 0 and all(isinstance(s, int) for s in value),
             f"'{where}' must be a non-empty list of integers", source)
    _require(len(set(value)) == len(value), f"'{where}' has repeats: {value}", source)
    return tuple(value)


def _axis(i: int, axis: Any, source: str, allowed: dict[str, list[str]]) -> Axis:
    _require(isinstance(axis, dict) and "name" in axis and "param" in axis and ("values" in axis or "points" in axis),
             f"axes[{i}] needs 'name', 'param' and 'values' (or 'points')", source)
    name = str(axis["name"])
    param = check_path(axis["param"], f"axes[{i}] ('{name}').param", source, allowed)
    unknown = set(axis) - {"name", "param", "values", "points", "scale", "kind"}
    _require(not unknown, f"axes[{i}] ('{name}'): unknown key(s) {sorted(unknown)}", source)
    scale = str(axis.get("scale", "linear"))
    _require(scale in SCALES, f"axes[{i}] ('{name}'): scale {scale!r}; allowed: {', '.join(SCALES)}", source)
    kind = str(axis.get("kind", "other"))
    _require(kind in KINDS, f"axes[{i}] ('{name}'): kind {kind!r}; allowed: {', '.join(KINDS)}", source)
    if "values" in axis:
        values = axis["values"]
        _require(isinstance(values, list) and len(values) > 0, f"axes[{i}] ('{name}'): 'values' is empty", source)
        points = [Point(name, v, param, {param: v}) for v in values]
    else:
        raw = axis["points"]
        _require(isinstance(raw, list) and len(raw) > 0, f"axes[{i}] ('{name}'): 'points' is empty", source)
        points = []
        for j, p in enumerate(raw):
            _require(isinstance(p, dict) and "value" in p, f"axes[{i}].points[{j}] needs 'value' (and 'set')",
                     source)
            settings = _settings(p.get("set") or {}, f"axes[{i}].points[{j}].set", source, allowed)
            points.append(Point(name, p["value"], param, {param: p["value"], **settings}))
    labels = [p.label for p in points]
    _require(len(set(labels)) == len(labels), f"axes[{i}] ('{name}'): repeated values", source)
    if scale == "log2":
        _require(all(isinstance(p.value, (int, float)) and p.value > 0 for p in points),
                 f"axes[{i}] ('{name}'): a log2 scale needs positive numbers", source)
    return Axis(name, param, kind, scale, tuple(points))


def _tunes(raw: Any, where: str, seeds: tuple[int, ...], labels: list[str], source: str,
           allowed: dict[str, list[str]]) -> tuple[Tune, ...]:
    _require(isinstance(raw, list), f"'{where}' must be a list of {{family, grid}} entries", source)
    tunes = []
    for i, t in enumerate(raw):
        _require(isinstance(t, dict) and "family" in t and isinstance(t.get("grid"), dict) and t["grid"],
                 f"{where}[{i}] needs 'family' ({CNN_FAMILY} or a baseline label) and a non-empty 'grid'", source)
        family = str(t["family"])
        _require(family in (CNN_FAMILY, *labels), f"{where}[{i}]: family {family!r}; allowed: "
                 f"{', '.join((CNN_FAMILY, *labels))}", source)
        grid = {}
        for path, values in t["grid"].items():
            _require(isinstance(values, list) and values, f"{where}[{i}].grid.{path}: a non-empty list of values",
                     source)
            grid[check_path(path, f"{where}[{i}].grid.{path}", source, allowed)] = tuple(values)
        tunes.append(Tune(family, grid, _seeds(t.get("seeds", [seeds[0]]), f"{where}[{i}].seeds", source)))
    families = [t.family for t in tunes]
    _require(len(set(families)) == len(families), f"{where}: one entry per family, got {families}", source)
    return tuple(tunes)


def parse_study(data: Any, source: str = "<study>") -> StudyConfig:
    """Validate a loaded YAML document; every problem names the key and what is allowed."""
    _require(isinstance(data, dict), "a study config is a mapping with keys " + ", ".join(sorted(SECTIONS)), source)
    unknown = set(data) - SECTIONS
    _require(not unknown, f"unknown key(s) {sorted(unknown)}; allowed: {sorted(SECTIONS)}", source)
    allowed = recipe_keys()

    base = data.get("base") or {}
    _require(isinstance(base, dict) and isinstance(base.get("backbone"), str),
             "'base' needs 'backbone' (a registered name) and optional 'kwargs'", source)
    base_kwargs = base.get("kwargs") or {}
    _require(isinstance(base_kwargs, dict), "'base.kwargs' must be a mapping", source)

    recipe = data.get("recipe") or {}
    _require(isinstance(recipe, dict) and set(recipe) <= set(RECIPE_SECTIONS),
             f"'recipe' may only hold {list(RECIPE_SECTIONS)} (the sections of a fit config)", source)
    recipe = {k: dict(recipe.get(k) or {}) for k in RECIPE_SECTIONS}
    for section, values in recipe.items():
        clash = RESERVED_KEYS[section] & set(values)
        _require(not clash, f"'recipe.{section}' may not set {sorted(clash)}: the study sets them per run", source)
        for key in values:
            close = difflib.get_close_matches(key, allowed[section], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            _require(key in allowed[section], f"'recipe.{section}' has an unknown key {key!r}{hint}; allowed:"
                     f" {', '.join(allowed[section])}", source)

    axes = tuple(_axis(i, a, source, allowed) for i, a in enumerate(data.get("axes") or []))
    names = [a.name for a in axes]
    _require(len(set(names)) == len(names), f"axis names must be unique, got {names}", source)

    baselines = []
    for i, b in enumerate(data.get("baselines") or []):
        _require(isinstance(b, dict) and isinstance(b.get("backbone"), str),
                 f"baselines[{i}] needs 'backbone' and optional 'kwargs', 'label' and 'recipe'", source)
        unknown = set(b) - {"label", "backbone", "kwargs", "recipe"}
        _require(not unknown, f"baselines[{i}]: unknown key(s) {sorted(unknown)}", source)
        own = _settings(b.get("recipe") or {}, f"baselines[{i}].recipe", source, allowed)
        baselines.append(Baseline(str(b.get("label", b["backbone"])), b["backbone"], dict(b.get("kwargs") or {}), own))
    labels = [b.label for b in baselines]
    _require(len(set(labels)) == len(labels) and CNN_FAMILY not in labels,
             f"baseline labels must be unique and not {CNN_FAMILY!r}, got {labels}", source)

    seeds = _seeds(data.get("seeds"), "seeds", source)
    _require(bool(axes) or bool(baselines), "the study has no axes and no baselines: it would make zero runs", source)

    tunes = _tunes(data.get("tune") or [], "tune", seeds, labels, source, allowed)
    study_grids = {t.family: set(t.grid) for t in tunes}

    budget = None
    if data.get("budget") is not None:
        b = data["budget"]
        _require(isinstance(b, dict) and isinstance(b.get("multiplier"), int) and b["multiplier"] > 1
                 and isinstance(b.get("points"), list) and b["points"],
                 "'budget' needs 'multiplier' (an integer > 1), 'points', and optional 'seeds' and 'tune'", source)
        unknown = set(b) - {"multiplier", "points", "seeds", "tune"}
        _require(not unknown, f"budget: unknown key(s) {sorted(unknown)}; allowed: multiplier, points, seeds, tune",
                 source)
        known = {"base", *labels, *(p.label for a in axes for p in a.points)}
        for p in b["points"]:
            _require(str(p) in known, f"budget point {p!r} is not 'base', an axis point or a baseline; known:"
                     f" {', '.join(sorted(known))}", source)
        budget_tunes = _tunes(b.get("tune") or [], "budget.tune", seeds, labels, source, allowed)
        for t in budget_tunes:
            # A longer budget's recipe is chosen whole: a setting tuned at the study's budget but not here would
            # carry a 6-epoch choice into the 24-epoch runs.
            missing = sorted(study_grids.get(t.family, set()) - set(t.grid))
            _require(not missing, f"budget.tune ({t.family}): the grid must also set {', '.join(missing)}, which the"
                     f" family's tuning at the study's budget sets", source)
        budget = Budget(b["multiplier"], _seeds(b.get("seeds", list(seeds)), "budget.seeds", source),
                        tuple(str(p) for p in b["points"]), budget_tunes)

    anchors = []
    for i, a in enumerate(data.get("anchors") or []):
        _require(isinstance(a, dict) and "label" in a and "config" in a,
                 f"anchors[{i}] needs 'label' and 'config' (a fit config file)", source)
        path = Path(str(a["config"]))
        if not path.is_absolute() and not path.is_file():
            path = Path(source).parent / path  # relative to the study file, when not to the working folder
        _require(path.is_file(), f"anchors[{i}]: config {a['config']} does not exist", source)
        reported = a.get("reported")
        _require(reported is None or isinstance(reported, (int, float)), f"anchors[{i}].reported: a number", source)
        anchor_seeds = _seeds(a.get("seeds", list(seeds)), f"anchors[{i}].seeds", source)
        anchors.append(Anchor(str(a["label"]), os.path.normpath(path), anchor_seeds, reported))

    notes = data.get("notes") or []
    _require(isinstance(notes, list) and all(isinstance(n, str) for n in notes), "'notes' must be a list of text",
             source)
    return StudyConfig(
        name=str(data.get("name") or Path(source).stem),
        notes=tuple(notes),
        base_backbone=base["backbone"],
        base_kwargs=dict(base_kwargs),
        recipe=recipe,
        axes=axes,
        baselines=tuple(baselines),
        seeds=seeds,
        tune=tuple(tunes),
        budget=budget,
        anchors=tuple(anchors),
        source=source,
    )


def with_overrides(data: Any, seeds: Optional[list[int]] = None, recipe: Optional[dict[str, dict[str, Any]]] = None,
                   source: str = "<study>") -> Any:
    """The study document with what the command line changes for a quick trial: the seeds of every point
    (``--seeds``), and recipe settings (``--epochs``, ``--trainer.X=V``, ``--model.X=V``, ``--data.X=V``)."""
    if not isinstance(data, dict):
        return data  # parse_study says what is wrong with it
    data = copy.deepcopy(data)
    if seeds is not None:
        data["seeds"] = list(seeds)
    for section, values in (recipe or {}).items():
        _require(section in RECIPE_SECTIONS, f"--{section}.*: the recipe has sections {', '.join(RECIPE_SECTIONS)}",
                 source)
        data["recipe"] = dict(data.get("recipe") or {})
        data["recipe"][section] = {**dict(data["recipe"].get(section) or {}), **values}
    return data


def load_study(path: str | Path, seeds: Optional[list[int]] = None,
               recipe: Optional[dict[str, dict[str, Any]]] = None) -> StudyConfig:
    data = read_yaml(path, "study config", StudyConfigError)
    return parse_study(with_overrides(data, seeds, recipe, str(path)), str(path))
