"""Stop a run whose loss has become NaN or infinite, instead of training on garbage for hours."""

from __future__ import annotations

import os
from typing import Optional

import pytorch_lightning as pl
import torch
from torch import Tensor

from lightning_cifar.errors import TrainingDivergedError

# On a GPU, reading the loss back every step would stall the pipeline; the first bad
# step is recorded on the device and read back only every so many steps.
GPU_CHECK_EVERY = 25


class NonFiniteLossGuard(pl.Callback):
    """Remembers the first step whose loss was not finite; raises once it is read back.

    The check runs before the backward pass, so on the CPU the bad step never reaches
    the weights. ``Classifier.configure_callbacks`` adds it to every Trainer.
    """

    def __init__(self) -> None:
        self._first_bad: Optional[Tensor] = None  # global step, -1 while all losses were finite
        self._bad_value: Optional[Tensor] = None
        self._checkpoints: Optional[pl.Callback] = None  # the run's checkpoint callback: what a stopped run keeps

    def observe(self, loss: Tensor, step: int, epoch: int, lr: float, last_batch: bool = False) -> None:
        loss = loss.detach().float()
        if self._first_bad is None or self._first_bad.device != loss.device:
            self._first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._bad_value = torch.zeros((), device=loss.device)
        newly_bad = ~torch.isfinite(loss) & (self._first_bad < 0)
        self._first_bad = torch.where(newly_bad, step, self._first_bad)
        self._bad_value = torch.where(newly_bad, loss, self._bad_value)
        if loss.device.type == "cpu" or last_batch or step % GPU_CHECK_EVERY == 0:
            self.check(epoch, lr)

    def check(self, epoch: int, lr: float) -> None:
        if self._first_bad is None or int(self._first_bad) < 0:
            return
        step = int(self._first_bad)
        if step == 0:  # no update had happened: the weights as built, or the data, gave it
            causes = ("the network's output or the input data: no weight had been updated yet, so not the learning"
                      " rate")
        else:
            causes = (f"a learning rate too high for this network (--model.lr={lr:g}; try a tenth of it), no"
                      " normalisation layers in a deep network, or corrupted input data")
        kept = self._kept()
        saved = (f"The last checkpoint saved before this step is kept: {kept}" if kept
                 else "No checkpoint had been saved")
        raise TrainingDivergedError(f"training loss became {float(self._bad_value)} at global step {step} (epoch"
                                    f" {epoch}); stopped. Likely causes: {causes}. {saved}")

    # -- callback hooks -------------------------------------------------------------------------

    @staticmethod
    def _lr(pl_module: pl.LightningModule) -> float:
        return float(getattr(pl_module.hparams, "lr", float("nan")))

    def _kept(self) -> str:
        """The checkpoint on disk a stopped run keeps; looked up only when it stops, not at every step."""
        callback = self._checkpoints
        path = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "") or ""
        return path if path and os.path.isfile(path) else ""

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        self._checkpoints = trainer.checkpoint_callback
        self.observe(loss, trainer.global_step, trainer.current_epoch, self._lr(pl_module),
                     last_batch=trainer.is_last_batch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._checkpoints = trainer.checkpoint_callback
        self.check(trainer.current_epoch, self._lr(pl_module))
