"""Training memory kept for reuse, not handed back to the kernel after every step.

glibc's ``malloc`` serves every block over 32 MiB (the most its adaptive threshold grows to) with a fresh ``mmap``
and unmaps it on ``free``. A CPU training step allocates its activations and gradients anew each time: the 94 %
config's step at batch 500 holds blocks of 100 MiB and more, so every step maps, zeroes and faults in about a
gigabyte page by page, and unmaps it again: 210,000 to 290,000 page faults and 0.7 CPU-seconds in the kernel per
step on a 2-core AVX2 EPYC, where keeping the memory made the step 0.89x the time (``python
benchmarks/page_faults.py``; benchmarks/RESULTS.md, "Page faults"). PyTorch has no caching allocator for the CPU,
and jemalloc or tcmalloc would need installing and ``LD_PRELOAD``; glibc's own ``mallopt`` does it at run time: no
``mmap`` (the blocks come from the heap) and no trimming of the heap's free top, so a step reuses the previous
step's pages.

The price: the process keeps its peak training memory until the run ends (1,944 against 1,860 MiB at its peak in
that measurement); ``teardown`` restores glibc's defaults and hands the free memory back (``malloc_trim``). Only
where the model trains on the CPU (a GPU step's tensors are not in ``malloc``'s heap) and only with glibc (Linux);
elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, Optional

import pytorch_lightning as pl

# mallopt's parameters (glibc's malloc.h) and glibc's defaults, restored at teardown.
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536
# mallopt takes a C int: the largest free top of the heap kept is 2 GiB, more than a step of ours frees at once.
KEEP_TRIM_THRESHOLD = 2**31 - 1


def glibc() -> Optional[Any]:
    """The C library, where it is glibc (its ``mallopt`` takes these parameters); ``None`` elsewhere."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        return ctypes.CDLL(None)
    except (AttributeError, ValueError, OSError):  # no confstr (Windows), or a C library without that name
        return None


def keep_freed_memory(libc: Any) -> bool:
    """Serve large blocks from the heap and keep its free memory; whether glibc took both settings."""
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD))


def restore_defaults(libc: Any) -> None:
    """glibc's default limits again, and the heap's free memory handed back to the kernel. (Not its adaptive
    thresholds: any ``mallopt`` of them turns those off for the rest of the process, which then keeps the mmap
    threshold they had reached, at most 32 MiB.)"""
    libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
    libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
    libc.malloc_trim(0)


class KeepFreedMemory(pl.Callback):
    """Keeps the memory a CPU run frees for its next step (glibc's ``mallopt``), from ``setup`` to ``teardown``.

    The CLI adds it to every run (``--allocator.enabled=false`` leaves glibc's allocator as it is); a Trainer of
    your own gets it with ``callbacks=[KeepFreedMemory()]``.
    """

    def __init__(self, enabled: bool = True) -> None:
        """
        Args:
            enabled: keep freed memory for reuse while a run trains or evaluates on the CPU (no page faults for
                the step's large blocks); ``false`` leaves glibc's defaults.
        """
        self.enabled = enabled
        self._changed: Optional[Any] = None  # the C library whose settings this run changed, for teardown

    @property
    def active(self) -> bool:
        """Whether this run changed glibc's settings (and teardown restores them)."""
        return self._changed is not None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.enabled or self.active or trainer.strategy.root_device.type != "cpu":
            return
        libc = glibc()
        if libc is not None:
            keep_freed_memory(libc)
            self._changed = libc  # teardown restores both settings, whichever glibc took

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Also after a failed or interrupted run: the process may go on (a study runs many fits in one).
        if self._changed is not None:
            restore_defaults(self._changed)
            self._changed = None
