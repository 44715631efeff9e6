"""A terminated command stops soon and says so, instead of finishing quietly with status 0.

Lightning catches SIGTERM (a cluster's scheduler, ``kill``, a container stopping) and sets
``trainer.received_sigterm``; fit and evaluation then stop at the next batch with ``SIGTERMException``, a
``SystemExit`` with no code: status 0, so ``fit && test`` went on (the checkpoints of the epochs that ended stay).
``predict`` did not look at the flag at all and ran to its end. This callback stops predict at the next batch too,
and says what was kept; :func:`lightning_cifar.cli.commands.main` turns the exception into status 143 (128 + 15).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lightning_cifar.errors import DiskFullError
from lightning_cifar.files import no_room


def terminated(exc: BaseException) -> bool:
    """Whether ``exc`` is Lightning's stop on SIGTERM."""
    return isinstance(exc, SIGTERMException)


class StopOnSigterm(pl.Callback):
    """Stops prediction at the next batch after a SIGTERM (Lightning stops fit and evaluation itself), and says what
    a fit stopped by it, or by a full disk, kept. ``Classifier.configure_callbacks`` adds it to every Trainer."""

    def on_predict_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.received_sigterm:
            raise SIGTERMException

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if terminated(exception):
            why = "SIGTERM"
        elif isinstance(exception, DiskFullError) or no_room(exception):
            why = "the disk is full"  # the error itself names the file, in main's one line
        else:
            return
        if trainer.state.fn == "fit":
            kept = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback is not None else ""
            what = (f"{kept} is the last checkpoint saved: resume with --ckpt_path=last" if kept
                    else "no epoch had ended, so nothing was kept")
            rank_zero_info(f"{why}: fit stopped during epoch {trainer.current_epoch + 1} of {trainer.max_epochs};"
                           f" {what}")
        else:
            rank_zero_info(f"{why}: {trainer.state.fn.value} stopped before its end; nothing of it was written")
