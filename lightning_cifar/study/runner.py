"""Running a study: each run an ordinary Lightning fit + test, results kept run by run.

Each run is built by the same parser, with the same defaults, as ``lightning-cifar fit``
(:func:`build`); its ``result.json`` records the ``fit`` arguments that reproduce it.

Every finished run writes ``runs/<run_id>/result.json`` (atomically) and then
``results.csv`` is rebuilt from all result files (atomically too). A run whose
result file exists is skipped on the next invocation; a run that was killed
half-way left no result file and is redone from scratch. Several processes
(``--shard K/N``) can share one output folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytorch_lightning as pl

from lightning_cifar import registry
from lightning_cifar.data import CIFAR10DataModule
from lightning_cifar.files import atomic_write_csv, atomic_write_json
from lightning_cifar.study.config import StudyConfigError
from lightning_cifar.study.plan import Run
from lightning_cifar.summary import forward_flops

RESULT_COLUMNS = [
    "axis", "value", "run_id", "config_key", "backbone", "kwargs", "seed", "params", "flops_per_image",
    "epochs", "train_time_s", "images_per_s", "best_val_acc", "test_acc", "test_loss", "val_acc_curve",
]


def describe_network(run: Run) -> tuple[int, int]:
    """(parameters, forward FLOPs per image) of the run's backbone."""
    net = registry.create(run.backbone, num_classes=10, **run.kwargs)
    return registry.count_parameters(net), forward_flops(net)


class ValCurve(pl.Callback):
    """Validation accuracy after every epoch, for the learning-curve plot."""

    def __init__(self) -> None:
        self.values: list[float] = []

    # Not on_validation_epoch_end: callbacks run before the module's hook, which logs val/acc,
    # so they would read the previous epoch's value.
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and "val/acc" in trainer.callback_metrics:
            self.values.append(round(float(trainer.callback_metrics["val/acc"]), 5))


def result_path(out: Path, run: Run) -> Path:
    return out / "runs" / run.run_id / "result.json"


def load_results(out: Path) -> list[dict[str, Any]]:
    results = []
    for path in sorted((out / "runs").glob("*/result.json")):
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # being written by another shard right now; the next rebuild picks it up
    return results


def rows_of(result: dict[str, Any]) -> list[list[Any]]:
    """One results.csv row per axis point the run serves."""
    rows = []
    for point in result["points"]:
        values = {**result, "axis": point["axis"], "value": point["value"],
                  "kwargs": json.dumps(result["kwargs"], sort_keys=True),
                  "val_acc_curve": json.dumps(result["val_acc_curve"])}
        rows.append([values[c] for c in RESULT_COLUMNS])
    return rows


def write_results_csv(out: Path, planned: Optional[set[str]] = None) -> Path:
    """results.csv from every finished run, or only those of ``planned`` (run ids of the current config:
    results left in the folder by an earlier version of the config do not mix in)."""
    rows = [RESULT_COLUMNS]
    for result in load_results(out):
        if planned is None or result["run_id"] in planned:
            rows += rows_of(result)
    path = out / "results.csv"
    atomic_write_csv(path, rows)
    return path


# Presentation defaults of a study run (a recipe may override them); nothing that changes results.
STUDY_TRAINER_DEFAULTS = {"enable_progress_bar": False, "enable_model_summary": False}


def recipe_config(run: Run, data_dir: Optional[str] = None) -> dict[str, Any]:
    """What ``lightning-cifar fit`` is given for this run: the recipe, the network and the seed."""
    data = dict(run.recipe["data"])
    if data_dir is not None:
        data["data_dir"] = data_dir
    return {
        "seed_everything": run.seed,
        "trainer": dict(run.recipe["trainer"]),
        "model": {**run.recipe["model"], "backbone": run.backbone, "backbone_kwargs": run.kwargs},
        "data": data,
    }


def fit_arguments(config: dict[str, Any]) -> list[str]:
    """``config`` as ``lightning-cifar fit`` arguments, to rerun one study run by hand."""
    words = [f"--seed_everything={config['seed_everything']}"]
    for section in ("trainer", "model", "data"):
        for key, value in config[section].items():
            text = value if isinstance(value, str) else json.dumps(value)
            words.append(f"--{section}.{key}={text}")
    return words


def run_config(run: Run, out: Path, data_dir: Optional[str] = None) -> dict[str, Any]:
    """The full configuration of one run: its recipe, plus where the study keeps logs and curves.
    Checkpoints are not kept (the study records metrics) and the per-run test report is off."""
    config = recipe_config(run, data_dir)
    logger = {"class_path": "pytorch_lightning.loggers.TensorBoardLogger",
              "init_args": {"save_dir": str(out / "tensorboard"), "name": run.run_id, "version": "",
                            "default_hp_metric": False}}
    config["trainer"] = {**STUDY_TRAINER_DEFAULTS, **config["trainer"], "logger": logger,
                         "enable_checkpointing": False, "default_root_dir": str(out / "runs" / run.run_id),
                         "callbacks": [{"class_path": f"{ValCurve.__module__}.{ValCurve.__qualname__}"}]}
    config["report"] = {"enabled": False}
    return config


def build(config: dict[str, Any]) -> Any:
    """The model, data module and trainer of ``config``, made exactly as ``lightning-cifar fit`` makes them
    (:func:`lightning_cifar.trainer_cli.make_cli`); a value fit would refuse is refused here, in one line."""
    from jsonargparse import ArgumentError

    from lightning_cifar.trainer_cli import make_cli

    try:
        return make_cli(config, run=False, exit_on_error=False)
    except ArgumentError as exc:
        text = " ".join(str(exc).split())
        raise StudyConfigError(f"a study run's configuration is refused by fit's parser: {text}") from None


def run_one(run: Run, out: Path, data_dir: Optional[str] = None,
            loaded: Optional[CIFAR10DataModule] = None) -> tuple[dict[str, Any], CIFAR10DataModule]:
    """Train and test one run; returns its result record and its data module (whose loaded
    images the next run with the same data settings reuses)."""
    from lightning_cifar.trainer_cli import check_output_dirs

    run_dir = out / "runs" / run.run_id
    shutil.rmtree(run_dir, ignore_errors=True)  # leftovers of a killed attempt
    shutil.rmtree(out / "tensorboard" / run.run_id, ignore_errors=True)
    # Before build(), which seeds: building this probe network draws from the RNG, and the run's
    # shuffling and augmentation must draw exactly what `lightning-cifar fit` draws.
    params, flops = describe_network(run)
    cli = build(run_config(run, out, data_dir))
    model, dm, trainer = cli.model, cli.datamodule, cli.trainer
    if loaded is not None and loaded.hparams == dm.hparams:
        # Same files, split and settings: reading and checking 180 MB again would only cost time.
        dm.classes, dm.train_set, dm.val_set, dm.test_set = loaded.classes, loaded.train_set, loaded.val_set, loaded.test_set
    curve = next(cb for cb in trainer.callbacks if isinstance(cb, ValCurve))
    check_output_dirs(trainer, model, fitting=True)
    started = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    train_time = time.perf_counter() - started
    tested = trainer.test(model, datamodule=dm, verbose=False)[0]
    images = trainer.current_epoch * len(dm.train_dataloader()) * dm.batch_size
    result = {
        "run_id": run.run_id,
        "config_key": run.config_key,
        "points": [{"axis": p.axis, "value": p.value} for p in run.points],
        "backbone": run.backbone,
        "kwargs": run.kwargs,
        "seed": run.seed,
        "params": params,
        "flops_per_image": flops,
        "epochs": trainer.current_epoch,
        "train_time_s": round(train_time, 2),
        "images_per_s": round(images / train_time, 1),
        "best_val_acc": max(curve.values) if curve.values else None,
        "test_acc": round(float(tested["test/acc"]), 5),
        "test_loss": round(float(tested["test/loss"]), 5),
        "val_acc_curve": curve.values,
        "fit_arguments": fit_arguments(recipe_config(run, data_dir)),
    }
    hparams = {"axis": ",".join(p.axis for p in run.points), "value": str(run.points[0].value),
               "seed": run.seed, "backbone": run.backbone, "params": params, "flops_per_image": flops,
               **{f"kwargs/{k}": str(v) for k, v in run.kwargs.items()}}
    logger = trainer.logger
    logger.log_hyperparams(hparams, metrics={"hp_metric": result["test_acc"], "study/best_val_acc":
                                             result["best_val_acc"] or 0.0})
    logger.finalize("success")
    atomic_write_json(result_path(out, run), result)
    return result, dm


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's and Fabric's info lines (seed, accelerator, tips) held back for a while."""
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning_fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def check_runs(runs: list[Run], out: Path, data_dir: Optional[str] = None) -> dict[str, Any]:
    """Every run's configuration through fit's parser, before the first run trains: a value fit
    would refuse stops the study now, not hours later. Returns each run's parsed configuration
    (fit's defaults filled in), by run id."""
    if not runs:
        return {}
    with quiet_lightning():  # only the parser is wanted: no "GPU available" lines before the plan
        parser = build(run_config(runs[0], out, data_dir)).parser
    parsed = {}
    for run in runs:
        try:
            parsed[run.run_id] = parser.parse_object(run_config(run, out, data_dir))
        except Exception as exc:  # jsonargparse's ArgumentError, or a type it cannot convert
            text = " ".join(str(exc).split())
            raise StudyConfigError(f"run {run.run_id}: refused by fit's parser: {text}") from None
    return parsed


def execute(runs: list[Run], out: Path, data_dir: Optional[str] = None,
            log: Callable[[str], None] = print, planned: Optional[set[str]] = None) -> int:
    """Run whatever of ``runs`` has no result yet; returns how many were run."""
    out.mkdir(parents=True, exist_ok=True)
    todo = [r for r in runs if not result_path(out, r).is_file()]
    log(f"{len(runs) - len(todo)} of {len(runs)} runs already done; {len(todo)} to run")
    if not todo:
        write_results_csv(out, planned)
        return 0
    loaded: Optional[CIFAR10DataModule] = None
    for i, run in enumerate(todo, start=1):
        where = ", ".join(f"{p.axis}={p.value}" for p in run.points)
        log(f"[{i}/{len(todo)}] {run.run_id} ({where})")
        result, loaded = run_one(run, out, data_dir, loaded)
        write_results_csv(out, planned)
        log(f"    test acc {result['test_acc']:.4f}, {result['train_time_s']:.0f} s")
    return len(todo)
