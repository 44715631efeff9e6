"""Training threads that follow the load other processes put on our cores.

PyTorch starts one intra-op thread per core and keeps that number. On a small machine shared with another busy
process, every parallel region then waits for the thread that shares its core with the other process: with one of
two cores busy, two threads trained ``cnn_base`` at 37 % of the idle speed where one thread kept 61 %
(``benchmarks/RESULTS.md``, "Under contention"). No library adapts the thread count to the load while a job runs,
so this callback does: every few seconds it measures how much of our cores the *other* processes used (the
machine's busy time from ``/proc/stat`` minus our own CPU time) and gives torch one thread per core they leave free.

A different thread count splits a reduction differently, so a run whose thread count follows the load is not
bit-identical to the same run on a quiet machine. A seeded run (``lightning-cifar`` seeds every run unless
``--seed_everything=false``) therefore keeps one thread count, written into its saved config
(``threads.count``), unless ``--threads.enabled=true`` asks for speed over repeatability.
"""

from __future__ import annotations

import math
import os
import time
from typing import Optional

import pytorch_lightning as pl
import torch

from lightning_cifar.errors import LightningCifarError

# A core counts as taken when other processes kept it this busy over the last interval. Below it, a thread of ours
# still gets most of the core; above it, the thread's waits stall every other thread at each barrier.
BUSY_CORE_FRACTION = 0.3
FIRST_INTERVAL_S = 0.5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def read_busy_seconds(cores: set[int], stat_path: str = "/proc/stat") -> Optional[float]:
    """Seconds the given cores spent on anything but idling since boot; ``None`` where /proc/stat is unreadable."""
    total = 0.0
    found = 0
    try:
        with open(stat_path, encoding="ascii") as f:
            for line in f:
                if not line.startswith("cpu") or line[3] == " ":
                    continue
                name, *fields = line.split()
                if int(name[3:]) not in cores:
                    continue
                ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
                total += sum(ticks) - ticks[3] - ticks[4]
                found += 1
    except (OSError, ValueError, IndexError):
        return None
    return total / CLOCK_TICKS if found else None


def clock() -> float:
    return time.monotonic()


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def own_cores() -> set[int]:
    """The cores this process may run on."""
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


# (wall clock, the cores' busy seconds since boot, this process's CPU seconds) at one moment.
Sample = tuple[float, float, float]


def sample(cores: set[int]) -> Optional[Sample]:
    busy = read_busy_seconds(cores)
    return None if busy is None else (clock(), busy, own_cpu_seconds())


def others_busy_cores(before: Sample, after: Sample) -> float:
    """How many cores' worth of time other processes kept busy between two samples (ours subtracted)."""
    wall, busy, own = (b - a for a, b in zip(before, after))
    return max(0.0, (busy - own) / wall) if wall > 0 else 0.0


def seeded() -> bool:
    """Whether this process's run was seeded (Lightning's ``seed_everything`` records the seed here)."""
    return os.environ.get("PL_GLOBAL_SEED") is not None


def threads_for(cores: int, others_busy_cores: float) -> int:
    """One thread per core the other processes leave free (at least one)."""
    taken = max(0, math.ceil(others_busy_cores - BUSY_CORE_FRACTION))
    return max(1, cores - taken)


class ThreadsForLoad(pl.Callback):
    """Sets torch's intra-op threads, while a CPU fit runs, to the cores in this process's affinity that other
    processes leave free, measured over every ``interval_s`` seconds of training; or, with ``count``, to that
    many threads throughout.

    Following the load is off in a seeded run (unless ``enabled=True``), where the user chose the thread count
    (``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` set), in a deterministic run (``--trainer.deterministic=true``),
    where training runs on a GPU, or where ``/proc/stat`` cannot be read. The thread count is restored when the
    fit ends.
    """

    def __init__(self, enabled: Optional[bool] = None, interval_s: float = 2.0, count: Optional[int] = None) -> None:
        """
        Args:
            enabled: follow the load: ``true`` always, ``false`` never, ``null`` (the default) only in a run that
                is not seeded, so that a seeded run is bit-identical whatever else the machine does.
            interval_s: seconds of training between two measurements.
            count: train with this many threads throughout (the CLI sets it to the process's thread count for a
                seeded run, so that its saved config says what it ran with); ``null`` leaves the count alone.
        """
        if interval_s <= 0:
            raise LightningCifarError(f"interval_s={interval_s}: must be > 0")
        if count is not None and count < 1:
            raise LightningCifarError(f"threads.count={count}: must be a positive number of threads, or null")
        if count is not None and enabled:
            raise LightningCifarError(f"threads.count={count} with threads.enabled=true: a fixed count and a count that"
                                      " follows the load exclude each other; drop one")
        self.enabled = enabled
        self.count = count
        self.interval_s = interval_s
        self._cores: set[int] = set()
        self._last: Optional[Sample] = None
        self._restore: Optional[int] = None
        self._measured = False
        self.changes: list[tuple[int, float]] = []  # (threads, others' busy cores) at every change: what it did

    def _active(self, pl_module: pl.LightningModule) -> bool:
        if self.enabled is False or self.count is not None:
            return False
        if self.enabled is None and seeded():
            return False  # a seeded run keeps one count: bit-identical under any load
        user_chose = any(os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"))
        # Another thread count may split a reduction differently: a run that asked for bitwise repeatability
        # (--trainer.deterministic=true) keeps one count throughout.
        deterministic = torch.are_deterministic_algorithms_enabled()
        return not user_chose and not deterministic and pl_module.device.type == "cpu"

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = None
        self._measured = False
        if self.count is not None and pl_module.device.type == "cpu":
            self._restore = torch.get_num_threads()
            torch.set_num_threads(self.count)
            return
        if not self._active(pl_module):
            return
        self._cores = own_cores()
        self._restore = torch.get_num_threads()
        self._last = sample(self._cores)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        if self._last is None:
            return
        # The first decision soon after the start, so that a short run, too, trains with the right count.
        due = self.interval_s if self._measured else min(FIRST_INTERVAL_S, self.interval_s)
        if clock() - self._last[0] < due:
            return
        self._measured = True
        now = sample(self._cores)
        if now is None:
            self._last = None
            return
        others = others_busy_cores(self._last, now)
        self._last = now
        threads = threads_for(len(self._cores), others)
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
            self.changes.append((threads, round(others, 2)))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Also after a failed or interrupted fit: the process may go on (a study runs many fits in one).
        if self._restore is not None:
            torch.set_num_threads(self._restore)
            self._restore = None
        self._last = None
