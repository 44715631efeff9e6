"""``lightning-cifar study --launcher ray``: every pending run of a study as a Ray task.

The driver (the process that runs the command) plans the study, submits the runs that may start (tuning
runs first, then each family's runs once its tuning is complete), and writes everything into ``--out``
itself as runs finish: each run's result, predictions and TensorBoard logs come back from the worker
through Ray, so the workers need no shared filesystem with the driver, and the files are written as
atomically as by the sequential launcher. What the workers do need is the data: each one reads CIFAR-10
from the data folder's path on its own machine (``--data-dir``, or the recipe's ``data.data_dir``), which
must exist there. The data is not shipped through Ray's object store: 180 MB per worker would cost more than
copying the folder to each node once, and a missing folder is refused in one line naming the node.

A worker that dies mid-run (killed, out of memory, its node lost) has its task retried by Ray (up to
``TASK_RETRIES`` times); a run that fails with an error stops the study with that error, keeping every
finished run. Resuming works as with the sequential launcher: finished runs are skipped by their hash.
The driver holds each submitted run's lock (:mod:`.locks`) until its files are written, so a second study on
the same ``--out`` (through Ray or not) leaves that run alone, and this one leaves alone the runs another holds.
"""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

from torchvision.datasets import CIFAR10

from lightning_cifar.data.datamodule import DEFAULT_DATA_DIR
from lightning_cifar.errors import LightningCifarError
from lightning_cifar.study.config import StudyConfig
from lightning_cifar.study.plan import Run
from lightning_cifar.study.launchers.locks import (busy_elsewhere, left_to_another_process, release_run_lock,
                                                   take_run_lock)
from lightning_cifar.study.progress import Progress, current_state
from lightning_cifar.study.runner import (check_runs, clear_run, finished, quiet_lightning, save_run, train_run,
                                          write_results_csv)

# Retries of a run whose worker process died (Ray's own count; an exception raised by the run is not retried).
TASK_RETRIES = 3
RAY_EXTRA = "pip install 'lightning-cifar[ray]'"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise LightningCifarError(f"--launcher ray needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


# The data module a worker process loaded last: the next run with the same data settings reuses its images
# (Ray keeps worker processes alive between tasks), as the sequential launcher does.
_loaded: Any = None


def train_on_worker(run: Run, threads: int, data_dir: Optional[str]) -> tuple[dict[str, Any], dict[str, bytes], float]:
    """One run on a Ray worker, in a temporary folder, with the study's thread count (not the one Ray gives the
    worker: ``OMP_NUM_THREADS`` = its CPUs); returns its result, its files (predictions and TensorBoard logs, by
    path relative to the output folder) and the seconds it trained and tested."""
    global _loaded

    # Checked here rather than left to the data module, which would download into the folder: several workers of
    # one machine would then download into the same place at once.
    where = data_dir or run.config.get("data", {}).get("data_dir") or DEFAULT_DATA_DIR
    if not Path(where, CIFAR10.base_folder).is_dir():
        raise LightningCifarError(
            f"data_dir {where!r} has no {CIFAR10.base_folder}/ on Ray node {socket.gethostname()}: the Ray launcher"
            " reads the data from that path on every worker's machine; copy the folder there (or mount it)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lightning-cifar-run-") as tmp, quiet_lightning():
        result, files, _loaded = train_run(run, Path(tmp), threads, data_dir, _loaded)
        logs = Path(tmp) / "tensorboard" / run.run_id
        for path in sorted(p for p in logs.rglob("*") if p.is_file()):
            files[f"tensorboard/{run.run_id}/{path.relative_to(logs).as_posix()}"] = path.read_bytes()
    return result, files, time.perf_counter() - started


def _cause(exc: BaseException) -> BaseException:
    """The exception a task raised, out of Ray's wrapper."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def execute_on_ray(study: StudyConfig, out: Path, k: int, n: int, threads: int, data_dir: Optional[str] = None,
                   address: Optional[str] = None, cpus_per_run: float = 1.0, gpus_per_run: float = 0.0,
                   log: Callable[[str], None] = print) -> None:
    """Run this shard's pending runs as Ray tasks (``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs each,
    fractions allowed), each training with ``threads`` threads as the sequential launcher's runs do, on the Ray
    instance at ``address``, else on one already started in this process, else on a local one started here (and
    stopped at the end)."""

    if cpus_per_run <= 0 or gpus_per_run < 0:
        raise LightningCifarError(f"--cpus-per-run {cpus_per_run} / --gpus-per-run {gpus_per_run}: need more than"
                                  " 0 CPUs and at least 0 GPUs per run")
    ray = import_ray()
    locks: dict[str, int] = {}  # run id -> its lock file, held from submission until its files are written
    started_here = not ray.is_initialized()
    if started_here:
        # Workers' own output (Lightning's lines for every run) stays in Ray's logs: the driver prints one line
        # per finished run, as the sequential launcher does.
        ray.init(address=address, log_to_driver=False, include_dashboard=False, configure_logging=False)
    try:
        resources = ray.cluster_resources()
        if resources.get("CPU", 0) < cpus_per_run or resources.get("GPU", 0) < gpus_per_run:
            raise LightningCifarError(
                f"the Ray cluster has {resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} GPUs in all;"
                f" a run asks for {cpus_per_run:g} CPUs and {gpus_per_run:g} GPUs (--cpus-per-run, --gpus-per-run)")
        task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=TASK_RETRIES)(train_on_worker)
        parallel = max(1, int(resources.get("CPU", 1) // cpus_per_run))
        if gpus_per_run:
            parallel = min(parallel, max(1, int(resources.get("GPU", 0) // gpus_per_run)))
        out.mkdir(parents=True, exist_ok=True)
        progress = Progress(log)
        checked: set[str] = set()
        elsewhere: set[str] = set()
        in_flight: dict[Any, Run] = {}
        while True:
            state = current_state(study, out, k, n)
            if not checked and not in_flight:
                progress.begin(state)
            running = {r.run_id for r in in_flight.values()}
            new = [r for r in state.todo if r.run_id not in running | elsewhere]
            unchecked = [r for r in new if r.run_id not in checked]
            if unchecked:
                check_runs(unchecked, out, threads, data_dir)  # before any of them trains
                checked.update(r.run_id for r in unchecked)
            submitted = 0
            for run in new:
                lock = take_run_lock(out, run)
                if lock is None:
                    elsewhere.add(run.run_id)
                    log(left_to_another_process(run))
                    continue
                if finished(out, run):  # finished by another process since this one looked
                    release_run_lock(lock)
                    continue
                locks[run.run_id] = lock
                in_flight[task.remote(run, threads, data_dir)] = run
                submitted += 1
            if submitted:
                log(f"submitted {submitted} runs to Ray ({cpus_per_run:g} CPUs, {gpus_per_run:g} GPUs, {threads}"
                    f" threads each; up to {parallel} at once on {resources.get('CPU', 0):g} CPUs,"
                    f" {resources.get('GPU', 0):g} GPUs)")
            if not in_flight:
                if any(r.run_id not in elsewhere for r in state.todo):
                    continue  # runs another process finished since: this state is out of date
                write_results_csv(out, state.plan)
                busy = elsewhere & {r.run_id for r in state.todo}
                if busy:
                    log(busy_elsewhere(len(busy), out))
                progress.waiting(state)
                return
            [ready], _ = ray.wait(list(in_flight), num_returns=1)
            run = in_flight.pop(ready)
            try:
                result, files, seconds = ray.get(ready)
            except Exception as exc:  # the run's own error, or Ray gave up on it
                for ref in in_flight:  # on a cluster that outlives this driver, they would train for nothing
                    ray.cancel(ref, force=True)
                for ref in in_flight:  # collected, so that Ray does not print their errors later as unhandled
                    try:
                        ray.get(ref, timeout=30)
                    except Exception:
                        pass
                cause = _cause(exc)
                text = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
                raise LightningCifarError(f"run {run.run_id} failed on a Ray worker: {text}") from None
            clear_run(out, run)
            save_run(out, run, result, files)
            release_run_lock(locks.pop(run.run_id))
            write_results_csv(out, state.plan)
            progress.finish(run, result, seconds, len(state.mine) - 1, parallel)  # state: before this one finished
    finally:
        for lock in locks.values():
            release_run_lock(lock)
        if started_here:
            ray.shutdown()

