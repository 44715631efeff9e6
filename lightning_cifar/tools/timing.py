"""Callbacks that measure: training throughput, and test accuracy against wall time.

Both write JSON lines, so benchmark scripts can run ``lightning-cifar fit`` exactly
as users do and read the measurements back::

    lightning-cifar fit ... --trainer.callbacks+=lightning_cifar.tools.timing.Throughput \\
        --trainer.callbacks.output=throughput.jsonl
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from torchmetrics.classification import MulticlassAccuracy

from lightning_cifar.errors import LightningCifarError

__all__ = ["EpochTestAccuracy", "Throughput"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _append_json(path: Optional[str], record: dict[str, Any]) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(line + "\n")


class Throughput(pl.Callback):
    """Training images per second over the steps after ``warmup_steps``.

    The clock covers everything a training step costs in the real loop: fetching
    the batch, moving it, augmenting, forward, backward, optimizer, logging.
    """

    def __init__(self, warmup_steps: int = 5, output: Optional[str] = None) -> None:
        """
        Args:
            warmup_steps: steps left out of the measurement (allocator, autotuning, compilation).
            output: JSON-lines file to append the result to (it is printed either way).
        """
        self.warmup_steps, self.output = warmup_steps, output
        self._start: Optional[float] = None
        self._images = 0
        self._steps = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self._steps += 1
        if self._steps == self.warmup_steps:
            _sync(pl_module.device)
            self._start = time.perf_counter()
        elif self._start is not None:
            self._images += int(batch[1].shape[0])

    @rank_zero_only
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._start is None or self._images == 0:
            return
        _sync(pl_module.device)
        seconds = time.perf_counter() - self._start
        _append_json(self.output, {
            "backbone": getattr(pl_module.hparams, "backbone", None),
            "precision": str(trainer.precision),
            "images": self._images,
            "seconds": round(seconds, 4),
            "images_per_s": round(self._images / seconds, 1),
            "threads": torch.get_num_threads(),
        })


class EpochTestAccuracy(pl.Callback):
    """Test accuracy after every training epoch, against the training wall time so far.

    The time spent on these extra test evaluations is measured and left out of
    ``train_wall_s``, which counts from ``start_time`` (default: when the callback
    was built; benchmark scripts pass the moment they launched the process, so
    start-up is included).
    """

    def __init__(self, output: Optional[str] = None, start_time: Optional[float] = None, from_epoch: int = 1) -> None:
        """
        Args:
            output: JSON-lines file to append one record per epoch to.
            start_time: ``time.time()`` value the wall clock counts from.
            from_epoch: first epoch (counting from 1) after which to test; a long run's early
                epochs cannot reach a high target, and with six-view test-time augmentation on
                a CPU each test pass costs about 40 % of a training epoch (benchmarks/RESULTS.md).
        """
        if from_epoch < 1:
            raise LightningCifarError(f"from_epoch={from_epoch}: must be at least 1 (epochs count from 1)")
        self.output = output
        self.start_time = time.time() if start_time is None else start_time
        self.from_epoch = from_epoch
        self.eval_seconds = 0.0

    @torch.no_grad()
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch + 1 < self.from_epoch:
            return
        _sync(pl_module.device)
        started = time.time()
        dm = trainer.datamodule
        if dm.test_set is None:
            dm.setup("test")
        metric = MulticlassAccuracy(dm.num_classes, average="micro").to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        # A DataLoader draws a seed from the global RNG; forking keeps the training's
        # random stream (augmentation, shuffling) exactly as in a run without this callback.
        cuda = [pl_module.device] if pl_module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), trainer.precision_plugin.forward_context():
            for images, labels in dm.test_dataloader():
                images, labels = images.to(pl_module.device), labels.to(pl_module.device)
                x = dm.to_float(images)
                metric.update(pl_module.predict_logits(x), labels)
        accuracy = float(metric.compute())
        pl_module.train(was_training)
        _sync(pl_module.device)
        self.eval_seconds += time.time() - started
        if trainer.is_global_zero:
            _append_json(self.output, {
                "epoch": trainer.current_epoch + 1,
                "train_images": trainer.global_step * dm.batch_size,  # whole batches only: the loader drops the rest
                "test_acc": round(accuracy, 5),
                "train_wall_s": round(time.time() - self.start_time - self.eval_seconds, 2),
                "eval_s": round(self.eval_seconds, 2),
            })
