"""Callbacks the tests inject into real CLI runs through --trainer.callbacks (class paths
``tests.helpers.probes.NAME``, with the repository on PYTHONPATH: :data:`tests.helpers.runs.PROBES_ENV`)."""

import json
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn


class HangAt(pl.Callback):
    """After batch ``batch`` of epoch ``epoch``: write ``marker``, then stall, waiting to be killed."""

    def __init__(self, epoch: int, batch: int, marker: str) -> None:
        self.epoch, self.batch, self.marker = epoch, batch, marker

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            Path(self.marker).write_text(str(trainer.global_step))
            time.sleep(600)


class PoisonWeightsAt(pl.Callback):
    """At the start of epoch ``epoch``, set one weight to infinity, as a diverging run would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                weight = next(pl_module.parameters())
                weight[(0,) * weight.dim()] = float("inf")


class ZeroHeadBeforeValidation(pl.Callback):
    """Before the validation of epoch ``epoch``, zero the last linear layer: every image then gets
    the same class, so that epoch's checkpoint scores worse than the ones before it."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch and not trainer.sanity_checking:
            head = [m for m in pl_module.modules() if isinstance(m, nn.Linear)][-1]
            with torch.no_grad():
                head.weight.zero_()
                head.bias.zero_()


class ShardRecorder(pl.Callback):
    """For the DDP test: each rank records which training images it was handed."""

    def __init__(self, output: str) -> None:
        self.output = output

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sampler = trainer.train_dataloader.sampler
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "sampler": type(sampler).__name__,
            "indices": [int(i) for i in sampler],
        }
        Path(self.output, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
