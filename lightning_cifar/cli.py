"""Command line: LightningCLI for fit/validate/test/predict, plus our own commands.

``lightning-cifar`` and its alias ``lightning`` both call :func:`main`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import CheckpointIO
from jsonargparse import DefaultHelpFormatter
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities import rank_zero_info

from lightning_cifar import registry
from lightning_cifar.callbacks import LatestCheckpoint, PredictionsCSV
from lightning_cifar.checkpoint_io import AtomicCheckpointIO, check_checkpoint
from lightning_cifar.config_files import check_cli_config_files
from lightning_cifar.data import CIFAR10DataModule
from lightning_cifar.evaluation_report import ClassificationReport
from lightning_cifar.errors import LightningCifarError
from lightning_cifar.model import Classifier

# Emitted by Lightning's own internals on every run; nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

PROG = "lightning-cifar"
DEBUG_ENV = "LIGHTNING_CIFAR_DEBUG"
LOG_DIR_NAME = "lightning_logs"


def default_precision() -> str:
    """bf16 autocast where the hardware does bf16 natively, else what runs fast there."""
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    try:
        cpu_bf16 = torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        cpu_bf16 = False
    return "bf16-mixed" if cpu_bf16 else "32-true"


def trainer_defaults() -> dict[str, Any]:
    return {
        # Lightning's own default (1000 epochs) is no sensible default for a one-cycle schedule.
        "max_epochs": 10,
        "log_every_n_steps": 10,
        "precision": default_precision(),
        "benchmark": True,  # cudnn autotuning; our input shapes never change
    }


EXTRA_COMMANDS_HELP = f"""\
Train, evaluate and use CIFAR-10 classifiers.

other commands:
  {PROG} backbones [PATTERN]   list registered backbones (shell wildcards, e.g. 'cnn_*')
  {PROG} study -c STUDY.yaml --out DIR [--dry-run] [--shard K/N] [--report-only]
                                 width/depth sweeps and CNN-vs-MLP comparison, with a report
  {PROG} summary --model.backbone=NAME [--model.backbone_kwargs=JSON]
                                 layer table, parameters and FLOPs per image
  {PROG} export --ckpt_path=CKPT [--format onnx|torchscript] [--output FILE]
                                 a checkpoint as a standalone ONNX / TorchScript model

add --debug (or set {DEBUG_ENV}=1) to see full tracebacks for usage errors.
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the description's line breaks kept (the list of other commands)."""


def find_checkpoint(alias: str, root: Path) -> Optional[Path]:
    """The ``last`` or ``best`` checkpoint of the newest run under ``root/lightning_logs`` that has one."""
    runs = [d for d in (root / LOG_DIR_NAME).glob("version_*/checkpoints") if d.parent.name[8:].isdigit()]
    for ckpt_dir in sorted(runs, key=lambda d: int(d.parent.name[8:]), reverse=True):
        if alias == "last" and (ckpt_dir / "last.ckpt").is_file():
            return ckpt_dir / "last.ckpt"
        if alias == "best":
            best = [p for p in ckpt_dir.glob("*.ckpt") if not p.name.startswith("last")]
            if best:
                return max(best, key=lambda p: p.stat().st_mtime)
    return None


def check_output_dirs(trainer: pl.Trainer, model: torch.nn.Module, fitting: bool) -> None:
    """Fail now, not after an hour of training, if logs or checkpoints cannot be written."""
    # Strings, not Paths, until remote ones are set aside: Path("s3://b") becomes "s3:/b".
    dirs = {str(trainer.default_root_dir)}
    dirs.update(str(logger.root_dir) for logger in trainer.loggers if logger.root_dir)
    if fitting:
        dirs.update(str(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None))
    # A checkpoint holds the weights plus up to two optimizer buffers per weight; a run keeps the
    # best and the last one, and writes a third next to them before renaming it.
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    need = (3 * 3 * params if fitting else 0) + 20 * 2**20
    for folder in sorted(d for d in dirs if "://" not in d):
        ensure_writable(Path(folder), need)


def ensure_writable(folder: Path, need_bytes: int) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise LightningCifarError(
            f"cannot write to {folder} ({exc.strerror or exc}); choose a writable folder with"
            " --trainer.default_root_dir=DIR"
        ) from None
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise LightningCifarError(
            f"only {free / 2**20:.0f} MiB free on the disk of {folder}; this run needs about"
            f" {need_bytes / 2**20:.0f} MiB for logs and checkpoints; free some space or choose another"
            " folder with --trainer.default_root_dir=DIR"
        )


class CifarCLI(LightningCLI):
    """LightningCLI with our checkpointing and prediction defaults.

    ``--ckpt_path=last`` and ``--ckpt_path=best`` also work in a new process: they
    name the newest run's last / best checkpoint under ``lightning_logs/``.
    """

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        if "weights_only" in config and config["weights_only"] is None:
            # Explicit, so that TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot turn it off behind the user's back.
            config["weights_only"] = True
        alias = config.get("ckpt_path")
        if alias in ("last", "best"):
            root = Path(config["trainer"].get("default_root_dir") or ".")
            found = find_checkpoint(alias, root)
            if found is not None:
                rank_zero_info(f"--ckpt_path={alias}: using {found}")
                config["ckpt_path"] = str(found)
            elif subcommand != "fit":  # fit with nothing to resume starts afresh, as in Lightning
                raise LightningCifarError(
                    f"--ckpt_path={alias}: no {alias} checkpoint under {root / LOG_DIR_NAME}/version_*/checkpoints;"
                    " pass the path of a .ckpt file"
                )
        if config.get("ckpt_path") not in (None, "last", "best", "hpc", "registry"):
            check_checkpoint(str(config["ckpt_path"]), trusted=config.get("weights_only") is False)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        extra_callbacks = [self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys]
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        if config.get("enable_checkpointing") is False:
            # Our always-on checkpoint callback would make Lightning refuse the run.
            extra_callbacks = [c for c in extra_callbacks if not isinstance(c, ModelCheckpoint)]
        if config.get("deterministic") and config.get("benchmark"):
            # cudnn autotuning (our default) picks algorithms by timing, which defeats determinism.
            config["benchmark"] = False
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            config["plugins"] = [*plugins, AtomicCheckpointIO()]
        return self._instantiate_trainer(config, extra_callbacks)

    def before_fit(self) -> None:
        check_output_dirs(self.trainer, self.model, fitting=True)

    def before_validate(self) -> None:
        check_output_dirs(self.trainer, self.model, fitting=False)

    before_test = before_predict = before_validate

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_lightning_class_args(LatestCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                # A "/" in the metric name would otherwise make sub-folders.
                "checkpoint.filename": "epoch{epoch:03d}-val_acc{val/acc:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(PredictionsCSV, "predictions")
        parser.add_lightning_class_args(ClassificationReport, "report")


def backbones_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} backbones",
        description="List registered backbones: name, parameters for 10 classes, description.",
    )
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'cnn_*'")
    args = parser.parse_args(list(argv))
    names = registry.available(args.pattern)
    if not names:
        raise LightningCifarError(
            f"no backbone matches {args.pattern!r}; registered: {', '.join(registry.available()) or '(none)'}"
        )
    width = max(len(n) for n in names)
    for name in names:
        try:
            params = registry.count_parameters(registry.create(name, num_classes=10))
            line = f"{name:<{width}}  {params:>11,}  {registry.describe(name)}"
        except LightningCifarError as exc:
            line = f"{name:<{width}}  {'BROKEN':>11}  {exc}"
        print(line, flush=True)
    return 0


def study_command(argv: Sequence[str]) -> int:
    from lightning_cifar.study.command import study_command as run_study  # imports matplotlib, scipy

    return run_study(argv)


def summary_command(argv: Sequence[str]) -> int:
    from lightning_cifar.summary import summary_command as run_summary

    return run_summary(argv)


def export_command(argv: Sequence[str]) -> int:
    from lightning_cifar.export import export_command as run_export

    return run_export(argv)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "backbones": backbones_command,
    "study": study_command,
    "summary": summary_command,
    "export": export_command,
}


def run_lightning_cli(argv: Optional[Sequence[str]]) -> None:
    """Run LightningCLI; ``argv=None`` reads ``sys.argv`` as LightningCLI expects."""
    CifarCLI(
        Classifier,
        CIFAR10DataModule,
        args=None if argv is None else list(argv),
        seed_everything_default=0,
        trainer_defaults=trainer_defaults(),
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": PROG, "description": EXTRA_COMMANDS_HELP, "formatter_class": HelpFormatter},
    )


def main(args: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    if "--debug" in argv:
        argv = [a for a in argv if a != "--debug"]
        os.environ[DEBUG_ENV] = "1"  # also reaches processes Lightning launches for DDP
        args = argv
    try:
        if argv and argv[0] in COMMANDS:
            raise SystemExit(COMMANDS[argv[0]](argv[1:]))
        check_cli_config_files(argv)
        run_lightning_cli(None if args is None else argv)
    except LightningCifarError as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except BrokenPipeError:
        # The reader went away (`lightning-cifar summary | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
