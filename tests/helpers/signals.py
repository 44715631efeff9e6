"""Signals sent at a chosen moment of a run, as a cluster's scheduler or `kill` would send them."""

import os
import signal

import pytorch_lightning as pl


class SigtermAt(pl.Callback):
    """Sends this process SIGTERM at the start of batch ``batch`` of epoch ``epoch`` (0-based) of ``stage``
    (``train``, ``test``, ``validate`` or ``predict``)."""

    def __init__(self, stage: str = "train", batch: int = 1, epoch: int = 0) -> None:
        self.stage, self.batch, self.epoch = stage, batch, epoch

    def _at(self, trainer: pl.Trainer, stage: str, batch_idx: int) -> None:
        if stage == self.stage and batch_idx == self.batch and trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._at(trainer, "train", batch_idx)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._at(trainer, "test", batch_idx)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking and trainer.state.fn == "validate":
            self._at(trainer, "validate", batch_idx)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._at(trainer, "predict", batch_idx)
