"""The default launcher: a study's runs one after another in this process, sharing one loaded dataset.

Each run is trained under its lock (:mod:`.locks`): a run another process is training is skipped here, never
trained twice.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

from lightning_cifar.data.datamodule import CIFAR10DataModule
from lightning_cifar.study.config import StudyConfig
from lightning_cifar.study.launchers.locks import busy_elsewhere, left_to_another_process, run_lock
from lightning_cifar.study.progress import Progress, current_state
from lightning_cifar.study.runner import check_runs, finished, run_one, write_results_csv


def execute(study: StudyConfig, out: Path, k: int, n: int, threads: int, data_dir: Optional[str] = None,
            log: Callable[[str], None] = print) -> None:
    """Run this shard's runs that have no result yet, one after another in this process, each with ``threads``
    threads: the tuning runs first, then, once a family's tuning is complete, the runs that use its winner. A run
    another process is training is left to it."""
    out.mkdir(parents=True, exist_ok=True)
    loaded: Optional[CIFAR10DataModule] = None
    checked: set[str] = set()
    elsewhere: set[str] = set()
    progress = Progress(log)
    while True:
        state = current_state(study, out, k, n)
        if not progress.started:
            progress.begin(state)
        unchecked = [r for r in state.todo if r.run_id not in checked]
        if unchecked:
            check_runs(unchecked, out, threads, data_dir)  # before any of them trains
            checked.update(r.run_id for r in unchecked)
        todo = [r for r in state.todo if r.run_id not in elsewhere]
        if not todo:
            write_results_csv(out, state.plan)
            busy = elsewhere & {r.run_id for r in state.todo}
            if busy:
                log(busy_elsewhere(len(busy), out))
            progress.waiting(state)
            return
        run = todo[0]
        with run_lock(out, run) as mine:
            if not mine:
                elsewhere.add(run.run_id)
                log(left_to_another_process(run))
                continue
            if finished(out, run):
                continue  # finished by another process since this one looked
            progress.start(run)
            started = time.perf_counter()
            result, loaded = run_one(run, out, threads, data_dir, loaded)
        write_results_csv(out, state.plan)
        progress.finish(run, result, time.perf_counter() - started, len(state.mine) - 1)
