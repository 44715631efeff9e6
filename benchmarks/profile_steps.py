"""A Lightning callback for ``profile_vs_airbench.py``'s run of ours (a module of its own: the parent process
never imports Lightning): torch.profiler over the training steps after the first ``skip``, written as JSON.

    lightning-cifar fit ... --trainer.callbacks+=profile_steps.ProfileSteps --trainer.callbacks.output=FILE
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.profiler import ProfilerActivity, profile


class ProfileSteps(pl.Callback):
    def __init__(self, output: str, skip: int = 3) -> None:
        """``skip``: steps left out first (oneDNN picks its kernels on the first ones)."""
        self.output, self.skip = output, skip
        self.profiler: Any = None
        self.started = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        if trainer.global_step == self.skip and self.profiler is None:
            self.profiler = profile(activities=[ProfilerActivity.CPU])
            self.profiler.__enter__()
            self.started = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, *_: Any) -> None:
        if self.profiler is None:
            return
        seconds = time.perf_counter() - self.started
        self.profiler.__exit__(None, None, None)
        images = (trainer.global_step - self.skip) * trainer.datamodule.batch_size
        ops = [[e.key, e.self_cpu_time_total / 1e6, e.count] for e in self.profiler.key_averages()]
        Path(self.output).write_text(json.dumps({"seconds": seconds, "images": images, "ops": ops}))
