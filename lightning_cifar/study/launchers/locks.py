"""One process trains a run at a time, whichever launcher: a lock per run in the output folder.

Several processes may work on one output folder (``--shard``, the same command started twice, a Ray driver beside a
sequential study): each run is trained under ``fcntl.flock`` on ``.locks/RUN_ID``, which the system releases if the
process dies, so a crashed study never leaves a run locked. A run another process holds is left to it.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from lightning_cifar.study.plan import Run

LOCKS = ".locks"


def take_run_lock(out: Path, run: Run) -> Optional[int]:
    """The open lock file of ``run`` if this process now holds its lock; None if another process does."""
    folder = out / LOCKS
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / run.run_id, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def release_run_lock(fd: int) -> None:
    os.close(fd)  # closing releases the lock


@contextmanager
def run_lock(out: Path, run: Run) -> Iterator[bool]:
    """Whether this process holds the run's lock (False: another process is training it), held while inside."""
    fd = take_run_lock(out, run)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            release_run_lock(fd)


def left_to_another_process(run: Run) -> str:
    return f"    {run.run_id}: another process is training it; left to that process"


def busy_elsewhere(count: int, out: Path) -> str:
    return (f"{count} runs are being trained by another process on {out}: run this command again when it ends, to"
            " report them")
