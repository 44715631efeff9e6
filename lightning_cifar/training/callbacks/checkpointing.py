"""The checkpoint callback every command-line run gets: ``last.ckpt`` after every epoch."""

from __future__ import annotations

from typing import Any, Optional
from weakref import proxy

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint


class LatestCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose ``last.ckpt`` follows every validation, improved or not.

    Lightning's own ``save_last=True`` rewrites ``last.ckpt`` only when a top-k checkpoint
    is saved, so after epochs without a new best a killed run would resume from the last
    improvement and redo (or lose) everything since. This class takes ``save_last`` over
    (``"link"`` counts as True) and writes ``last.ckpt`` itself, through public Trainer API,
    at the end of every training epoch (after its validation, as Lightning saves its own
    checkpoints), and also after a validation in the middle of an epoch.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refresh_last, self.save_last = bool(self.save_last), False
        self._refreshed_at_step: Optional[int] = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not trainer.is_last_batch:  # mid-epoch validation; at an epoch's end, on_train_epoch_end saves
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._refresh_last(trainer)

    def _refresh_last(self, trainer: pl.Trainer) -> None:
        if (
            not self.refresh_last
            or trainer.sanity_checking
            or trainer.fast_dev_run
            or trainer.state.fn != "fit"
            or self._refreshed_at_step == trainer.global_step  # already written at this step
        ):
            return
        self._refreshed_at_step = trainer.global_step
        self.last_model_path = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
        trainer.save_checkpoint(self.last_model_path, self.save_weights_only)
        for logger in trainer.loggers:
            logger.after_save_checkpoint(proxy(self))
