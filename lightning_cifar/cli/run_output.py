"""Where a command's output goes (the run folder, TensorBoard), what ``fit`` says of it when it ends, and
what a command that fails takes back."""

from __future__ import annotations

import contextlib
import os
import shutil
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.core.saving import save_hparams_to_yaml
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.tensorboard.summary import hparams as hparams_summary

from lightning_cifar.checkpoints.run_folders import LOG_DIR_NAME, UNLOGGED_DIR_NAME, claim_version

# What TensorBoard's HPARAMS tab compares runs by: the scalars as logged, declared by name.
COMPARED_METRICS = ("val/acc", "val/loss", "test/acc", "test/loss")


class RunLogger(TensorBoardLogger):
    """TensorBoard's logger with the HPARAMS tab comparing runs by their real ``val/acc`` and ``test/acc``.

    Lightning's logger writes an ``hp_metric`` of -1 at step 0 as a placeholder, and a test run's ``hp_metric``
    is only that -1. Here the hyperparameters are written with the metrics declared by name and no value:
    TensorBoard reads their values from the scalars the run logs.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, default_hp_metric=False, **kwargs)

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: Any = None) -> None:
        super().log_hyperparams(params, metrics)  # with metrics, Lightning's own summary too
        # Written now, once: Lightning's save() writes hparams.yaml only where there is none yet, so a folder used
        # again (--output) would keep the settings of the command that used it first.
        Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        save_hparams_to_yaml(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), self.hparams)
        if metrics is None:
            flat = _flat(dict(params) if not isinstance(params, dict) else params)
            for summary in hparams_summary(flat, {name: 0.0 for name in COMPARED_METRICS}):
                self.experiment.file_writer.add_summary(summary)


def _flat(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``a/b`` keys with the plain values TensorBoard takes (others as text)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}/"))
        else:
            flat[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat


# The run folder rank 0 claimed, for the processes Lightning starts for the other ranks (they inherit it).
RUN_VERSION_ENV = "LIGHTNING_CIFAR_RUN_VERSION"


# The folders this command made for its output: removed if it fails before writing a checkpoint there.
_new_folders: ContextVar[Optional[list[Path]]] = ContextVar("lightning_cifar_new_folders", default=None)


def _made(folder: Path) -> None:
    made = _new_folders.get()
    if made is not None:
        made.append(folder)


def default_logger(root: str) -> Any:
    """Lightning's default logger (TensorBoard, ``ROOT/lightning_logs/version_N``), its folder claimed
    atomically instead of found by listing, which two runs starting together both see as free."""
    if "://" in root:
        return True  # a remote folder: Lightning's own default
    if rank_zero_only.rank == 0:
        if not (Path(root) / LOG_DIR_NAME).exists():
            _made(Path(root) / LOG_DIR_NAME)
        try:
            version = claim_version(Path(root) / LOG_DIR_NAME)
        except OSError:
            return True  # unwritable: check_output_dirs says so in one line before anything runs
        os.environ[RUN_VERSION_ENV] = str(version)
        _made(Path(root) / LOG_DIR_NAME / f"version_{version}")
    else:
        version = int(os.environ.get(RUN_VERSION_ENV, "0"))
    return RunLogger(save_dir=root, name=LOG_DIR_NAME, version=version)


def evaluation_logger(subcommand: str, ckpt_path: Any, output: Optional[str]) -> Optional[RunLogger]:
    """Where ``validate`` / ``test`` / ``predict`` write (TensorBoard events, the report, predictions.csv):
    ``--output``, else the run the checkpoint belongs to (``lightning_logs/version_N/test/version_M`` for
    ``.../version_N/checkpoints/x.ckpt``, M counting that run's evaluations); None for a checkpoint outside a run
    folder (a new run folder then)."""
    if output:
        folder = Path(output)
        if not folder.exists():
            _made(folder)
        return RunLogger(save_dir=str(folder), name="", version="")
    if not isinstance(ckpt_path, str) or "://" in ckpt_path:
        return None
    ckpt = Path(ckpt_path)
    if ckpt.parent.name != UNLOGGED_DIR_NAME:
        return None
    run = ckpt.parent.parent
    if not (run / subcommand).exists():
        _made(run / subcommand)
    try:
        version = claim_version(run / subcommand)
    except OSError:
        return None  # unwritable: a new run folder then, and check_output_dirs says so if that fails too
    _made(run / subcommand / f"version_{version}")
    return RunLogger(save_dir=str(run), name=subcommand, version=version)


@contextlib.contextmanager
def taken_back_on_failure() -> Iterator[None]:
    """While a command runs: the output folders it makes are noted, and removed if it fails before it wrote
    a checkpoint there (a usage error, data that cannot be read, a crash in the first epoch)."""
    made: list[Path] = []
    token = _new_folders.set(made)
    try:
        yield
    except BaseException as exc:
        # Lightning's stop on SIGTERM is a SystemExit without a code too, and not a success.
        if not (isinstance(exc, SystemExit) and exc.code in (0, None)) or type(exc).__name__ == "SIGTERMException":
            remove_unfinished(made)
        raise
    finally:
        _new_folders.reset(token)


def remove_unfinished(folders: list[Path]) -> None:
    """After a failed command: the output folders it made go, unless a checkpoint was written there (a fit
    that failed after some epochs keeps them, to resume from)."""
    for folder in folders:
        if folder.is_dir() and not any(folder.rglob("*.ckpt")):
            shutil.rmtree(folder, ignore_errors=True)


def _shown(path: Optional[str]) -> Optional[str]:
    """A path as short as it can be said: relative to the working folder when it lies under it."""
    if not path:
        return None
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:  # another drive
        return str(path)


def fit_summary(trainer: pl.Trainer) -> str:
    """Lines naming the run folder, the best and the last checkpoint and the best monitored score: the
    progress bar, when it is on, shows numbers that scroll away; when it is off, nothing else says them."""
    how = "stopped early (interrupted)" if trainer.interrupted else f"finished {trainer.current_epoch} epochs"
    lines = [f"fit {how}"]
    folder = trainer.log_dir if trainer.loggers else None
    if folder:
        logs = _shown(str(Path(folder).parent))
        lines.append(f"  run folder:      {_shown(folder)}  (tensorboard --logdir {logs})")
    checkpoint = trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None
    if checkpoint is not None:
        score = checkpoint.best_model_score
        if checkpoint.best_model_path and score is not None:
            lines.append(f"  best checkpoint: {_shown(checkpoint.best_model_path)}"
                         f"  ({checkpoint.monitor} {float(score):.4f})")
        if checkpoint.last_model_path:
            lines.append(f"  last checkpoint: {_shown(checkpoint.last_model_path)}")
        if checkpoint.best_model_path or checkpoint.last_model_path:
            lines.append("  test it with:    lightning-cifar test --ckpt_path=best (or last, or a path) and the same"
                         " --data options")
    else:
        lines.append("  no checkpoints written (--trainer.enable_checkpointing=false)")
    return "\n".join(lines)


def evaluation_summary(trainer: pl.Trainer, subcommand: str) -> str:
    """Where ``validate`` / ``test`` wrote: the folder of its TensorBoard events (and, after ``test``, its report)."""
    if not trainer.loggers or not trainer.log_dir:
        return f"{subcommand} wrote no logs (--trainer.logger=false)"
    folder = _shown(trainer.log_dir)
    report = Path(trainer.log_dir) / "test_report"
    extra = f"; report in {_shown(str(report))}" if subcommand == "test" and report.is_dir() else ""
    return f"{subcommand} wrote to {folder} (tensorboard --logdir {folder}){extra}"
