"""Command line: LightningCLI for fit/validate/test/predict, plus our own commands.

``lightning-cifar`` and its alias ``lightning`` both call :func:`main`.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities import rank_zero_info

from lightning_cifar import registry
from lightning_cifar.callbacks import PredictionsCSV
from lightning_cifar.data import CIFAR10DataModule
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

set {DEBUG_ENV}=1 to see full tracebacks for usage errors.
"""


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
        alias = config.get("ckpt_path")
        if alias not in ("last", "best"):
            return
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

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        extra_callbacks = [self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys]
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        if config.get("enable_checkpointing") is False:
            # Our always-on checkpoint callback would make Lightning refuse the run.
            extra_callbacks = [c for c in extra_callbacks if not isinstance(c, ModelCheckpoint)]
        return self._instantiate_trainer(config, extra_callbacks)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
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


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {"backbones": backbones_command, "study": study_command}


def run_lightning_cli(argv: Optional[Sequence[str]]) -> None:
    """Run LightningCLI; ``argv=None`` reads ``sys.argv`` as LightningCLI expects."""
    CifarCLI(
        Classifier,
        CIFAR10DataModule,
        args=None if argv is None else list(argv),
        seed_everything_default=0,
        trainer_defaults=trainer_defaults(),
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": PROG, "description": EXTRA_COMMANDS_HELP},
    )


def main(args: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv and argv[0] in COMMANDS:
            raise SystemExit(COMMANDS[argv[0]](argv[1:]))
        run_lightning_cli(None if args is None else argv)
    except LightningCifarError as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
