"""The default launcher: a study's runs one after another in this process, sharing one loaded dataset."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

from lightning_cifar.data.datamodule import CIFAR10DataModule
from lightning_cifar.study.config import StudyConfig
from lightning_cifar.study.progress import Progress, current_state
from lightning_cifar.study.runner import check_runs, run_one, write_results_csv


def execute(study: StudyConfig, out: Path, k: int, n: int, threads: int, data_dir: Optional[str] = None,
            log: Callable[[str], None] = print) -> None:
    """Run this shard's runs that have no result yet, one after another in this process, each with ``threads``
    threads: the tuning runs first, then, once a family's tuning is complete, the runs that use its winner."""
    out.mkdir(parents=True, exist_ok=True)
    loaded: Optional[CIFAR10DataModule] = None
    checked: set[str] = set()
    progress = Progress(log)
    while True:
        state = current_state(study, out, k, n)
        if not progress.started:
            progress.begin(state)
        unchecked = [r for r in state.todo if r.run_id not in checked]
        if unchecked:
            check_runs(unchecked, out, threads, data_dir)  # before any of them trains
            checked.update(r.run_id for r in unchecked)
        if not state.todo:
            write_results_csv(out, state.plan)
            progress.waiting(state)
            return
        run = state.todo[0]
        progress.start(run)
        started = time.perf_counter()
        result, loaded = run_one(run, out, threads, data_dir, loaded)
        write_results_csv(out, state.plan)
        progress.finish(run, result, time.perf_counter() - started, len(state.mine) - 1)
