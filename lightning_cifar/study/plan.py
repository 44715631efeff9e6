"""Expanding a study config into runs: axes x values x seeds, plus the baselines.

A run is identified by a hash of everything that determines it: the network
(as built: its full module description, so two spellings of one network are
one network), the recipe and the seed. Points of different axes that describe
the same network (the base point lies on every axis) therefore share one run,
and a rerun of the study recognises finished runs whatever order it takes them in.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from lightning_cifar.study.config import StudyConfig

BASELINE_AXIS = "baseline"


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Point:
    """Where a run sits in the study: an axis and the value on it."""

    axis: str
    value: Any


@dataclass(frozen=True)
class Run:
    backbone: str
    kwargs: dict[str, Any]
    seed: int
    recipe: dict[str, dict[str, Any]]
    architecture: str
    points: tuple[Point, ...] = field(default=(), compare=False)

    @property
    def config_key(self) -> str:
        """Hash of the network and recipe, without the seed: runs of one configuration share it."""
        blob = _canonical({"architecture": self.architecture, "recipe": self.recipe})
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    @property
    def run_id(self) -> str:
        return f"{self.backbone}-{self.config_key}-s{self.seed}"

    def with_point(self, point: Point) -> Run:
        return Run(self.backbone, self.kwargs, self.seed, self.recipe, self.architecture, (*self.points, point))


def architecture(backbone: str, kwargs: dict[str, Any]) -> str:
    """Hash of the network as built: equal for every spelling of the same layers."""
    from lightning_cifar import registry

    net = registry.create(backbone, num_classes=10, check=False, **kwargs)
    return hashlib.sha256(repr(net).encode()).hexdigest()[:16]


def expand(study: StudyConfig) -> list[Run]:
    """Every distinct run, in a fixed order, each listing all the axis points it serves."""
    runs: dict[str, Run] = {}

    def add(backbone: str, kwargs: dict[str, Any], point: Point) -> None:
        arch = architecture(backbone, kwargs)
        for seed in study.seeds:
            run = Run(backbone, kwargs, seed, study.recipe, arch)
            known = runs.get(run.run_id, run)
            runs[run.run_id] = known.with_point(point)

    for axis in study.axes:
        for value in axis.values:
            add(study.base_backbone, {**study.base_kwargs, axis.param: value}, Point(axis.name, value))
    for baseline in study.baselines:
        add(baseline.backbone, baseline.kwargs, Point(BASELINE_AXIS, baseline.label))
    return list(runs.values())


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), with 0 <= K < N."""
    from lightning_cifar.study.config import StudyConfigError

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
