"""Expanding a study config into runs.

A run is one ``lightning-cifar fit`` configuration and a seed. It is identified by a hash of
everything that determines it: the network as built (its module description, so two
spellings of one network are one network) and the rest of fit's configuration. Points that
describe the same run (the base network lies on several axes; a tuning candidate may be the
winner) share it, and a rerun of the study recognises finished runs in any order.

The plan has four roles, in the order they run:

* ``tune``: each tuned family's grid on its representative network (the base network for
  ``cnn``, the baseline itself otherwise), chosen by validation accuracy; and, where the budget
  check names a family in its own ``tune``, that family's grid again at the longer budget;
* ``main``: every axis point and baseline, with its family's tuned settings;
* ``budget``: a subset again at several times the epochs, with the settings chosen at that budget
  where the budget check tunes the family, else with the study's;
* ``anchor``: fit configs trained exactly as written (the seed notebook's recipes).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from statistics import mean
from typing import Any, Callable, Optional

from lightning_cifar import registry
from lightning_cifar.cli.lightning_cli import trainer_defaults
from lightning_cifar.files import read_yaml
from lightning_cifar.study.config import CNN_FAMILY, RECIPE_SECTIONS, Point, StudyConfig, StudyConfigError, Tune, apply

BASELINE_AXIS = "baseline"
ANCHOR_AXIS = "anchor"
BUDGET_AXIS = "budget"
TUNE_PREFIX = "tune:"
# Tuning at the budget check's epochs: "tune@4x:cnn".
BUDGET_TUNE_FORMAT = "tune@{multiplier}x:"
ROLES = ("tune", "main", "budget", "anchor")
# Data settings that say where the files are, not how to train: anchors take them from the study.
DATA_LOCATION = ("data_dir", "download", "verify")


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Run:
    config: dict[str, Any]  # fit's trainer / model / data sections
    seed: int
    architecture: str
    family: str
    roles: tuple[str, ...] = field(default=(), compare=False)
    points: tuple[Point, ...] = field(default=(), compare=False)

    @property
    def backbone(self) -> str:
        return self.config["model"]["backbone"]

    @property
    def kwargs(self) -> dict[str, Any]:
        return self.config["model"].get("backbone_kwargs") or {}

    @property
    def config_key(self) -> str:
        """Hash of the network and the rest of the configuration, without the seed."""
        rest = {k: v for k, v in self.config.items() if k != "model"}
        rest["model"] = {k: v for k, v in self.config["model"].items() if k not in ("backbone", "backbone_kwargs")}
        blob = _canonical({"architecture": self.architecture, "config": rest})
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    @property
    def run_id(self) -> str:
        return f"{self.backbone}-{self.config_key}-s{self.seed}"

    def serving(self, role: str, point: Point) -> Run:
        roles = self.roles if role in self.roles else (*self.roles, role)
        return Run(self.config, self.seed, self.architecture, self.family, roles, (*self.points, point))


def architecture(backbone: str, kwargs: dict[str, Any]) -> str:
    """Hash of the network as built: equal for every spelling of the same layers."""
    net = registry.create_backbone(backbone, num_classes=10, check=False, **kwargs)
    return hashlib.sha256(repr(net).encode()).hexdigest()[:16]


def max_epochs(config: dict[str, Any]) -> int:
    return int(config["trainer"].get("max_epochs", trainer_defaults()["max_epochs"]))  # fit's default when unset


def tune_label(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k.split('.', 1)[1] if k.count('.') == 1 else k}={v}" for k, v in settings.items())


@dataclass
class Tuning:
    """What the tuning runs chose: the winning settings of each tuned family (empty until its runs finished),
    at the study's budget and, in ``budget``, at the budget check's."""

    winners: dict[str, dict[str, Any]] = field(default_factory=dict)
    table: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # family -> candidates with scores
    pending: dict[str, int] = field(default_factory=dict)  # family -> tuning runs still missing
    budget: Optional[Tuning] = None


def budget_tune_prefix(study: StudyConfig) -> str:
    return BUDGET_TUNE_FORMAT.format(multiplier=study.budget.multiplier if study.budget else 0)


def family_config(study: StudyConfig, family: str) -> dict[str, Any]:
    """The untuned configuration of a family's representative network."""
    if family == CNN_FAMILY:
        return study.base_config
    baseline = next(b for b in study.baselines if b.label == family)
    config = study.base_config
    config["model"] = {**study.recipe["model"], "backbone": baseline.backbone, "backbone_kwargs": dict(baseline.kwargs)}
    return apply(config, baseline.recipe)


def choose(study: StudyConfig, results: dict[str, dict[str, Any]]) -> Tuning:
    """The tuning candidates' mean final validation accuracy over their seeds, and each family's winner
    (ties: the first candidate listed), at the study's budget and at the budget check's. Never the test set.
    Tuning results are found by the point they recorded (the tuning and the candidate's settings), so a
    renamed or re-hashed run does not hide them."""
    scores: dict[tuple[str, str], dict[int, float]] = {}
    for result in results.values():
        curve = result.get("val_acc_curve")
        for point in result.get("points", []):
            if point["axis"].startswith("tune") and curve:
                scores.setdefault((point["axis"], _canonical(point["settings"])), {})[result["seed"]] = curve[-1]
    tuning = _choose(study.tune, TUNE_PREFIX, scores)
    tuning.budget = _choose(study.budget.tune if study.budget else (), budget_tune_prefix(study), scores)
    return tuning


def _choose(tunes: tuple[Tune, ...], prefix: str, scores: dict[tuple[str, str], dict[int, float]]) -> Tuning:
    tuning = Tuning()
    for tune in tunes:
        rows, missing = [], 0
        for candidate in tune.candidates():
            found = scores.get((prefix + tune.family, _canonical(candidate)), {})
            values = [found[seed] for seed in tune.seeds if seed in found]
            missing += len(tune.seeds) - len(values)
            rows.append({"settings": candidate, "label": tune_label(candidate), "val_acc": values,
                         "mean_val_acc": mean(values) if values else None})
        tuning.table[tune.family] = rows
        if missing:
            tuning.pending[tune.family] = missing
        else:
            best = max(rows, key=lambda r: r["mean_val_acc"])  # max keeps the first of equal scores
            tuning.winners[tune.family] = best["settings"]
    return tuning


def main_configs(study: StudyConfig, tuning: Tuning) -> dict[str, tuple[str, dict[str, Any]]]:
    """Label ("base", an axis point "width=2", a baseline's label) -> (family, fit configuration) of the
    main runs, each with its family's tuned settings (the first candidate while tuning is pending)."""

    def tuned(family: str, config: dict[str, Any]) -> dict[str, Any]:
        tune = next((t for t in study.tune if t.family == family), None)
        if tune is None:
            return config
        return apply(config, tuning.winners.get(family) or tune.candidates()[0])

    main = {"base": (CNN_FAMILY, tuned(CNN_FAMILY, study.base_config))}
    for axis in study.axes:
        for point in axis.points:
            main[point.label] = (CNN_FAMILY, tuned(CNN_FAMILY, apply(study.base_config, point.settings)))
    for baseline in study.baselines:
        main[baseline.label] = (baseline.label, tuned(baseline.label, family_config(study, baseline.label)))
    return main


def longer(study: StudyConfig, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` at the budget check's epochs."""
    return apply(config, {"trainer.max_epochs": max_epochs(config) * study.budget.multiplier})


def budget_configs(study: StudyConfig, tuning: Tuning) -> dict[str, tuple[str, dict[str, Any]]]:
    """Label -> (family, fit configuration) of the budget check's runs: the main run's configuration at the longer
    budget, with the settings chosen at that budget where the budget check tunes the family (its first candidate
    while that tuning is pending)."""
    main = main_configs(study, tuning)
    chosen = tuning.budget or Tuning()
    configs = {}
    for label in study.budget.points:
        family, config = main[label]
        tune = next((t for t in study.budget.tune if t.family == family), None)
        if tune is not None:
            config = apply(config, chosen.winners.get(family) or tune.candidates()[0])
        configs[label] = (family, longer(study, config))
    return configs


def base_key(study: StudyConfig, tuning: Tuning) -> str:
    """The config key of the base network's main runs."""
    config = main_configs(study, tuning)["base"][1]
    return Run(config, 0, architecture(config["model"]["backbone"], config["model"]["backbone_kwargs"]),
               CNN_FAMILY).config_key


def expand(study: StudyConfig, tuning: Optional[Tuning] = None,
           arch: Callable[[str, dict[str, Any]], str] = architecture) -> list[Run]:
    """Every distinct run, in role order (tune, main, budget, anchor), each listing the points it serves.

    Families whose tuning has not finished are planned with their first grid candidate, so that a
    dry run can size the study; ``pending_families`` tells the runner not to train those yet.
    """
    tuning = tuning or Tuning()
    runs: dict[str, Run] = {}

    def add(role: str, family: str, config: dict[str, Any], seeds: tuple[int, ...], point: Point) -> None:
        for section in RECIPE_SECTIONS:
            config.setdefault(section, {})
        network = arch(config["model"]["backbone"], config["model"].get("backbone_kwargs") or {})
        for seed in seeds:
            run = Run(config, seed, network, family)
            runs[run.run_id] = runs.get(run.run_id, run).serving(role, point)

    for tune in study.tune:
        for candidate in tune.candidates():
            config = apply(family_config(study, tune.family), candidate)
            add("tune", tune.family, config, tune.seeds,
                Point(f"{TUNE_PREFIX}{tune.family}", tune_label(candidate), ",".join(tune.grid), candidate))
    for tune in study.budget.tune if study.budget else ():
        for candidate in tune.candidates():
            config = longer(study, apply(family_config(study, tune.family), candidate))
            add("tune", tune.family, config, tune.seeds,
                Point(budget_tune_prefix(study) + tune.family, tune_label(candidate), ",".join(tune.grid), candidate))

    main = main_configs(study, tuning)
    for axis in study.axes:
        for point in axis.points:
            add("main", CNN_FAMILY, main[point.label][1], study.seeds, point)
    for baseline in study.baselines:
        add("main", baseline.label, main[baseline.label][1], study.seeds,
            Point(BASELINE_AXIS, baseline.label, "backbone"))

    if study.budget is not None:
        for label, (family, config) in budget_configs(study, tuning).items():
            add("budget", family, config, study.budget.seeds,
                Point(BUDGET_AXIS, label, "trainer.max_epochs", {"trainer.max_epochs": max_epochs(config)}))

    for anchor in study.anchors:
        loaded = read_yaml(anchor.config, "anchor config", StudyConfigError) or {}
        config = {section: dict((loaded.get(section) if isinstance(loaded, dict) else None) or {})
                  for section in RECIPE_SECTIONS}
        if "backbone" not in config["model"]:
            raise StudyConfigError(f"anchor {anchor.label!r}: {anchor.config} names no model.backbone")
        # Where the data lives is the study's business, not the recipe's.
        location = {k: v for k, v in study.recipe["data"].items() if k in DATA_LOCATION}
        config["data"] = {**location, **config["data"]}
        add("anchor", f"anchor:{anchor.label}", config, anchor.seeds, Point(ANCHOR_AXIS, anchor.label, "config"))

    # The tuning at the budget check's epochs decides the budget runs only: it runs after the main runs, just
    # before the runs it decides, so that an interrupted study has its main points first.
    order = {role: i for i, role in enumerate(ROLES)}
    budget_tuning = budget_tune_prefix(study)

    def phase(point: Point) -> float:
        if point.axis.startswith(budget_tuning):
            return order["budget"] - 0.5
        if point.axis.startswith(TUNE_PREFIX):
            return order["tune"]
        return order.get({BUDGET_AXIS: "budget", ANCHOR_AXIS: "anchor"}.get(point.axis, "main"))

    return sorted(runs.values(), key=lambda r: min(phase(p) for p in r.points))


def pending_families(study: StudyConfig, tuning: Tuning) -> set[str]:
    """Tuned families whose winner is not known yet: at the study's budget, or, as ``"FAMILY@4x"``, at the budget
    check's."""
    chosen = tuning.budget or Tuning()
    return ({t.family for t in study.tune if t.family not in tuning.winners}
            | {f"{t.family}@{study.budget.multiplier}x" for t in (study.budget.tune if study.budget else ())
               if t.family not in chosen.winners})


def waits_for(run: Run, study: StudyConfig, pending: set[str]) -> Optional[str]:
    """The pending tuning (as :func:`pending_families` names it) that decides this run's settings, if any: a tuning
    run never waits; a budget run waits for its family's tuning at the budget check's epochs where there is one."""
    if "tune" in run.roles:
        return None
    if "budget" in run.roles and study.budget is not None:
        longer_family = f"{run.family}@{study.budget.multiplier}x"
        if longer_family in pending:
            return longer_family
    return run.family if run.family in pending else None


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), with 0 <= K < N."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise StudyConfigError(f"--shard {text!r}: expected K/N with whole numbers, e.g. 0/4") from None
    if not (n >= 1 and 0 <= k < n):
        raise StudyConfigError(f"--shard {text!r}: need N >= 1 and 0 <= K < N")
    return k, n


def shard(runs: list[Run], k: int, n: int) -> list[Run]:
    """Every n-th run starting at the k-th: n shards partition the plan exactly."""
    return runs[k::n]
