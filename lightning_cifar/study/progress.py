"""Where a study stands (the runs left, and those that may start now) and the lines a launcher prints."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from lightning_cifar.study.config import StudyConfig
from lightning_cifar.study.plan import Run, choose, expand, pending_families, shard, waits_for
from lightning_cifar.study.runner import RESULT_VERSION, load_results


@dataclasses.dataclass
class Pending:
    """Where a study stands: the plan, this shard's runs without a result, those of them that may start now
    (tuning runs, and runs whose settings' tuning is complete), and the tunings still pending (as
    :func:`~lightning_cifar.study.plan.pending_families` names them)."""

    plan: list[Run]
    shard_size: int
    mine: list[Run]
    todo: list[Run]
    blocked: set[str]


def current_state(study: StudyConfig, out: Path, k: int, n: int) -> Pending:
    results = {r["run_id"]: r for r in load_results(out) if r.get("version") == RESULT_VERSION}
    tuning = choose(study, results)
    plan = expand(study, tuning)
    blocked = pending_families(study, tuning)
    ours = shard(plan, k, n)
    mine = [r for r in ours if r.run_id not in results]
    todo = [r for r in mine if waits_for(r, study, blocked) is None]
    return Pending(plan, len(ours), mine, todo, blocked)


class Progress:
    """The lines a launcher prints: what is done before it starts, each run as it starts and as it finishes
    (accuracy, seconds, runs left and the time left at this pace), and why it stops with runs left."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.spent: list[float] = []
        self.started = 0

    def begin(self, state: Pending) -> None:
        self.log(f"{state.shard_size - len(state.mine)} of {state.shard_size} runs already done; "
                 f"{len(state.mine)} to run")

    def start(self, run: Run) -> None:
        self.started += 1
        self.log(f"[{self.started}] {run.run_id} ({'; '.join(p.label for p in run.points)})")

    def finish(self, run: Run, result: dict[str, Any], seconds: float, left: int, parallel: int = 1) -> None:
        self.spent.append(seconds)
        eta = sum(self.spent) / len(self.spent) * left / max(1, parallel)
        val = f"val acc {result['val_acc']:.4f}" if result["val_acc"] is not None else "no validation"
        points = "; ".join(p.label for p in run.points)
        self.log(f"    {run.run_id} ({points}): test acc {result['test_acc']:.4f}, {val}, {seconds:.0f} s;"
                 f" {left} runs left in this shard, about {eta / 60:.0f} min at this pace")

    def waiting(self, state: Pending) -> None:
        if state.mine:
            self.log(f"{len(state.mine)} runs wait for the tuning of {', '.join(sorted(state.blocked))}, whose runs"
                     " belong to other shards: run this command again once they are done")
