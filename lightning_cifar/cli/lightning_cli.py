"""The LightningCLI behind ``fit``, ``validate``, ``test`` and ``predict``, and the one place
their defaults live: ``lightning-cifar fit`` and every run of ``lightning-cifar study`` are
built by :func:`make_cli`, so they get the same trainer defaults, callbacks and checks.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import pytorch_lightning as pl
import torch
from jsonargparse import DefaultHelpFormatter, Namespace
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.plugins.io import CheckpointIO
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from lightning_cifar.checkpoints.compatibility import check_weights_fit, checkpoint_normalize, shapes_only_backbone
from lightning_cifar.checkpoints.model_settings import explicit_model_keys, plain, reconcile_model_settings
from lightning_cifar.checkpoints.reading import MODEL_HPARAMS, check_checkpoint, local_checkpoint_path
from lightning_cifar.checkpoints.run_folders import (
    CHECKPOINT_FILENAME,
    LOG_DIR_NAME,
    MONITOR,
    UNLOGGED_DIR_NAME,
    checkpoint_of_run,
    find_checkpoint,
)
from lightning_cifar.checkpoints.writing import AtomicCheckpointIO
from lightning_cifar.cli.config_files import PARSER_MODE, ConfigFiles, reading_config_files
from lightning_cifar.cli.precision import UNSUPPORTED_PRECISION, default_precision, emulated_bf16_warning
from lightning_cifar.cli.program import DEBUG_ENV, PROG, expected_warnings_hidden
from lightning_cifar.cli.run_output import (
    default_logger,
    evaluation_logger,
    evaluation_summary,
    fit_summary,
    taken_back_on_failure,
)
from lightning_cifar.data.datamodule import CIFAR10DataModule
from lightning_cifar.models.footprint import check_memory
from lightning_cifar.errors import LightningCifarError
from lightning_cifar.files import ensure_writable
from lightning_cifar.tools.allocator import KeepFreedMemory
from lightning_cifar.tools.threads import ThreadsForLoad
from lightning_cifar.training.callbacks.checkpointing import LatestCheckpoint
from lightning_cifar.training.callbacks.evaluation_report import ClassificationReport
from lightning_cifar.training.callbacks.predictions import PredictionsCSV
from lightning_cifar.training.classifier import Classifier

# Checkpoint aliases Lightning itself understands; left to it.
LIGHTNING_ALIASES = ("hpc", "registry")
# Callbacks every run gets, each configurable under its own key (--checkpoint.save_top_k=3, ...).
CALLBACK_GROUPS = {"checkpoint": LatestCheckpoint, "predictions": PredictionsCSV, "report": ClassificationReport,
                   "threads": ThreadsForLoad, "allocator": KeepFreedMemory}
CHECKPOINT_DEFAULTS = {
    "checkpoint.monitor": MONITOR,
    "checkpoint.mode": "max",
    "checkpoint.save_last": True,
    "checkpoint.filename": CHECKPOINT_FILENAME,
    "checkpoint.auto_insert_metric_name": False,
}


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
  {PROG} options               this project's own options of fit / validate / test / predict, short
                                 (`{PROG} fit --help` lists them among the Trainer's 900 lines)
  {PROG} backbones [PATTERN]   list registered backbones (shell wildcards, e.g. 'cnn_*')
  {PROG} study -c STUDY.yaml --out DIR [--dry-run] [--shard K/N] [--report-only]
                                 width/depth sweeps and CNN-vs-MLP comparison, with a report
  {PROG} summary --model.backbone=NAME [--model.backbone_kwargs=JSON]
                                 layer table, parameters and FLOPs per image
  {PROG} export --ckpt_path=CKPT [--format onnx|torchscript] [--output FILE] [--overwrite]
                                 a checkpoint as a standalone ONNX / TorchScript model

add --debug (or set {DEBUG_ENV}=1) to see full tracebacks for usage errors.
"""


SUBCOMMAND_HELP = f"""\
{PROG} {{subcommand}}: the project's own options, short: `{PROG} options`. The most used:
  --model.backbone=NAME (`{PROG} backbones`), --model.backbone_kwargs=JSON, --model.lr, --model.optimizer,
  --data.data_dir=DIR, --data.batch_size, --data.augment, --trainer.max_epochs, --trainer.accelerator,
  --ckpt_path=PATH|last|best|RUN_FOLDER, -c FILE, --print_config.
Below: every option, the Trainer's included.
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the description's line breaks kept (the list of other commands)."""


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
        ensure_writable(Path(folder), need, "--trainer.default_root_dir=DIR")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def trainer_refusal(trainer: dict[str, Any], exc: Exception) -> str:
    """Lightning's refusal of the trainer settings, in one line that names the setting."""
    accelerator = str(trainer.get("accelerator") or "auto")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        return (f"--trainer.accelerator={accelerator}: this machine has no GPU that PyTorch can use"
                " (torch.cuda.is_available() is False); use --trainer.accelerator=cpu or auto")
    return f"the trainer settings were refused by Lightning: {' '.join(str(exc).split())}"


class CifarCLI(LightningCLI):
    """LightningCLI with our callbacks, checkpoint checks and checkpoint aliases.

    ``--ckpt_path=last`` and ``--ckpt_path=best`` also work in a new process: they name the
    newest run's last checkpoint, or its best by the monitored score, under ``lightning_logs/``.
    A checkpoint is checked (plain data, no class paths) before anything reads it, and read once
    here: its model settings are applied from that read (LightningCLI would read the whole file
    again for them); the trainer's own load is the second and last.
    """

    def __init__(self, *args: Any, config_files: Optional[ConfigFiles] = None, **kwargs: Any) -> None:
        self.config_files = config_files or ConfigFiles()  # what the parser read of the -c files
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        self.checkpoint: Optional[dict[str, Any]] = None  # the --ckpt_path file as checked, tensors memory-mapped
        self.ckpt_path: Optional[str] = None  # held back from LightningCLI until before_instantiate_classes
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        precision = str(config["trainer"].get("precision"))
        if precision in UNSUPPORTED_PRECISION:
            # The data and the input standardisation are float32: a float64 model fails on the first batch.
            raise LightningCifarError(f"--trainer.precision={precision}: not supported; allowed: 32-true, bf16-mixed,"
                                      " 16-mixed, bf16-true, 16-true, transformer-engine")
        if subcommand == "fit" and config.get("output"):
            raise LightningCifarError(f"--output={config['output']}: --output is for validate, test and predict;"
                                      " fit writes its run folder under --trainer.default_root_dir"
                                      " (lightning_logs/version_N)")
        if "weights_only" in config and config["weights_only"] is None:
            # Explicit, so that TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot turn it off behind the user's back.
            config["weights_only"] = True
        if subcommand == "fit" and config["data"].get("val_split") == 0 and config["checkpoint"]["monitor"] == MONITOR:
            # Nothing validates, so there is no best epoch to keep: only last.ckpt, and no warning
            # every epoch that val/acc was never logged.
            config["checkpoint"]["monitor"], config["checkpoint"]["save_top_k"] = None, 0
            rank_zero_info("--data.val_split=0: no validation, so checkpoints keep the last epoch only"
                           " (lightning_logs/version_*/checkpoints/last.ckpt; test it with --ckpt_path=last)")
        alias = config.get("ckpt_path")
        if alias in ("last", "best"):
            root = Path(config["trainer"].get("default_root_dir") or ".")
            found = find_checkpoint(alias, root)
            if found is not None:
                rank_zero_info(f"--ckpt_path={alias}: using {found.path} ({found.why})")
                config["ckpt_path"] = str(found.path)
            elif subcommand != "fit" or alias == "best":  # fit --ckpt_path=last with none starts afresh (Lightning)
                hint = ("; leave --ckpt_path out to start afresh, or resume from last" if subcommand == "fit"
                        else "; pass the path of a .ckpt file")
                raise LightningCifarError(
                    f"--ckpt_path={alias}: no {'scored ' if alias == 'best' else ''}{alias} checkpoint under"
                    f" {root / LOG_DIR_NAME}/version_*/checkpoints or {root / UNLOGGED_DIR_NAME}{hint}"
                )
        path = config.get("ckpt_path")
        if isinstance(path, str):
            # A local file as a URL is checked and loaded as the path it names; other URLs are refused.
            config["ckpt_path"] = path = local_checkpoint_path(path)
        if isinstance(path, str) and Path(path).is_dir():
            found = checkpoint_of_run(Path(path))
            if found is None:
                raise LightningCifarError(f"--ckpt_path={path}: a folder with no checkpoint; name a run folder"
                                          f" ({LOG_DIR_NAME}/version_N), its checkpoints/ folder, or a .ckpt file")
            rank_zero_info(f"--ckpt_path={path}: using {found.path} ({found.why})")
            config["ckpt_path"] = path = str(found.path)
        if path in (None, "last", "best", *LIGHTNING_ALIASES):
            return
        checkpoint = check_checkpoint(str(path), trusted=config.get("weights_only") is False)
        if checkpoint is None:  # trusted: LightningCLI reads its settings itself
            return
        label = f"--ckpt_path={path}"
        legacy = checkpoint_normalize(checkpoint, label)
        if legacy is not None:
            config["model"]["normalize"] = legacy
            rank_zero_info(f"{label} was written by lightning-cifar 0.1, which left standardising the"
                           f" images to the data module (its normalize={str(legacy).lower()}); the model takes that"
                           f" setting over: --model.normalize={str(legacy).lower()}")
        given = explicit_model_keys(args, self.config_files.model_keys(subcommand))
        runtime = reconcile_model_settings(config["model"], checkpoint.get(MODEL_HPARAMS) or {}, given, label)
        self._apply_model_settings(subcommand, checkpoint, runtime)
        self.checkpoint, self.ckpt_path = checkpoint, str(path)
        # LightningCLI applies a checkpoint's settings when it finds a ckpt_path after parse_arguments, by
        # reading the whole file again; they are applied above, so it finds none until before_instantiate_classes.
        self.config[subcommand]["ckpt_path"] = None

    def _apply_model_settings(self, subcommand: str, checkpoint: dict[str, Any], runtime: dict[str, Any]) -> None:
        """The checkpoint's model settings over the command line's, as LightningCLI applies them (jsonargparse's
        public ``parse_object``), then the runtime settings the user gave (``--model.tta=true`` to evaluate a
        checkpoint with test-time augmentation)."""
        hparams = dict(checkpoint.get(MODEL_HPARAMS) or {})
        hparams.pop("_instantiator", None)
        if hparams:
            # Raising, not exiting: jsonargparse's exit prints the whole usage before its error (a checkpoint's
            # `lr: "fast"`); the refusal is one line naming the file.
            exits, self.parser.exit_on_error = self.parser.exit_on_error, False
            try:
                self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
            except Exception as exc:  # jsonargparse's refusal of a value, a page long: one line naming the file
                text = " ".join(str(exc).split())
                raise LightningCifarError(f"--ckpt_path={self.config[subcommand].get('ckpt_path')}: its model"
                                          f" settings are refused: {text[:300]}") from exc
            finally:
                self.parser.exit_on_error = exits
        for key, value in runtime.items():
            self.config[subcommand]["model"][key] = value

    def before_instantiate_classes(self) -> None:
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        seed = config.get("seed_everything")
        threads = config["threads"]
        seeded = seed is not None and seed is not False
        if seeded and threads.get("enabled") is not True and threads.get("count") is None:
            # A seeded run trains with one thread count, whatever the load (a different count sums in a different
            # order): the count this process has, written into the run's saved config.
            threads["count"] = torch.get_num_threads()
        if not subcommand:
            return
        if self.ckpt_path is not None:
            config["ckpt_path"] = self.ckpt_path  # for the trainer's own load
        if subcommand != "fit":
            # Evaluating a checkpoint in a folder of its own: its checkpoint callback has nothing to resume, nor
            # do the callbacks' saved states matter (a val_split=0 run's checkpoint callback monitors nothing).
            # Filtered for this command only: make_cli runs it inside expected_warnings_hidden().
            warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
            warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks used to create")
        # The model settings are final here (a checkpoint's applied) and nothing is built yet: one shapes-only
        # build of the network serves both checks.
        memory = config.get("check_memory", True)
        if not memory and self.checkpoint is None:
            return
        model = plain(config["model"])
        net = shapes_only_backbone(model)
        if self.checkpoint is not None:
            check_weights_fit(self.checkpoint, f"--ckpt_path={self.ckpt_path}", net)
        if memory:
            training = subcommand == "fit"
            check_memory(model, config["data"]["batch_size" if training else "eval_batch_size"],
                         training, str(config["trainer"].get("accelerator") or "auto"), net)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        # Everything through LightningCLI's public override point: our callbacks and the atomic
        # checkpoint writer join whatever the user configured.
        config = self.config_init.get(str(self.subcommand), self.config_init)
        trainer = config["trainer"]
        ours = [config[key] for key in CALLBACK_GROUPS]
        if trainer.get("enable_checkpointing") is False:
            # Our always-on checkpoint callback would make Lightning refuse the run.
            ours = [c for c in ours if not isinstance(c, ModelCheckpoint)]
        extra: dict[str, Any] = {"callbacks": [*_as_list(trainer.get("callbacks")), *ours]}
        plugins = _as_list(trainer.get("plugins"))
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            extra["plugins"] = [*plugins, AtomicCheckpointIO()]
        if trainer.get("logger") in (None, True) and "logger" not in kwargs:
            evaluating = self.subcommand in ("validate", "test", "predict")
            logger = evaluation_logger(str(self.subcommand), config.get("ckpt_path"), config.get("output")) \
                if evaluating else None
            extra["logger"] = logger or default_logger(str(trainer.get("default_root_dir") or os.getcwd()))
        if trainer.get("deterministic") and trainer.get("benchmark"):
            # cudnn autotuning (our default) picks algorithms by timing, which defeats determinism.
            extra["benchmark"] = False
        try:
            built = super().instantiate_trainer(**{**extra, **kwargs})
        except MisconfigurationException as exc:
            raise LightningCifarError(trainer_refusal(trainer, exc)) from exc
        slow = emulated_bf16_warning(built)
        if slow:
            rank_zero_warn(slow)
        return built

    def before_fit(self) -> None:
        check_output_dirs(self.trainer, self.model, fitting=True)

    def after_fit(self) -> None:
        rank_zero_info(fit_summary(self.trainer))

    def after_validate(self) -> None:
        rank_zero_info(evaluation_summary(self.trainer, "validate"))

    def after_test(self) -> None:
        rank_zero_info(evaluation_summary(self.trainer, "test"))

    def before_validate(self) -> None:
        check_output_dirs(self.trainer, self.model, fitting=False)

    before_test = before_predict = before_validate

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_argument("--output", type=Optional[str], default=None,
                            help="validate / test / predict: the folder for TensorBoard events, the report and"
                                 " predictions.csv (default: the checkpoint's run folder, in a sub-folder named after"
                                 " the command)")
        parser.add_argument("--check_memory", type=bool, default=True,
                            help="refuse a network that cannot fit in memory, estimated before it is built"
                                 " (lightning_cifar/models/footprint.py); false skips the estimate")
        for key, callback in CALLBACK_GROUPS.items():
            parser.add_class_arguments(callback, key, fail_untyped=False, sub_configs=True)
        parser.set_defaults(CHECKPOINT_DEFAULTS)


def make_cli(args: Optional[Union[Sequence[str], dict[str, Any], Namespace]], run: bool = True,
             exit_on_error: bool = True) -> CifarCLI:
    """The CLI with all our defaults. ``args``: command-line words, or (with ``run=False``, as the
    study uses it) a config mapping of ``trainer`` / ``model`` / ``data`` / ``seed_everything``.
    ``exit_on_error=False`` raises jsonargparse's ``ArgumentError`` instead of printing usage and exiting."""
    parser_kwargs: dict[str, Any] = {"prog": PROG, "description": EXTRA_COMMANDS_HELP, "formatter_class": HelpFormatter,
                                     "parser_mode": PARSER_MODE}
    for subcommand in ("fit", "validate", "test", "predict"):
        # Shown first by `fit --help`, above the Trainer's options.
        parser_kwargs[subcommand] = {"description": SUBCOMMAND_HELP.format(subcommand=subcommand),
                                     "usage": f"{PROG} {subcommand} [options]", "formatter_class": HelpFormatter}
    if not exit_on_error:
        parser_kwargs["exit_on_error"] = False
    words = sys.argv[1:] if args is None else (list(args) if isinstance(args, (list, tuple)) else [])
    with expected_warnings_hidden(), taken_back_on_failure(), reading_config_files(words) as config_files:
        return _build_cli(args, run, parser_kwargs, config_files)


def _build_cli(args: Any, run: bool, parser_kwargs: dict[str, Any], config_files: ConfigFiles) -> CifarCLI:
    return CifarCLI(
        Classifier,
        CIFAR10DataModule,
        args=None if args is None else (list(args) if isinstance(args, (list, tuple)) else args),
        run=run,
        seed_everything_default=0,
        trainer_defaults=trainer_defaults(),
        save_config_kwargs={"overwrite": True},
        parser_kwargs=parser_kwargs,
        config_files=config_files,
    )
