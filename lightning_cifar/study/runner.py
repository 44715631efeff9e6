"""Running a study: each run an ordinary Lightning fit + test, results kept run by run.

Every finished run writes ``runs/<run_id>/result.json`` (atomically) and then
``results.csv`` is rebuilt from all result files (atomically too). A run whose
result file exists is skipped on the next invocation; a run that was killed
half-way left no result file and is redone from scratch. Several processes
(``--shard K/N``) can share one output folder.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_cifar import registry
from lightning_cifar.data import CIFAR10DataModule
from lightning_cifar.files import atomic_write_csv, atomic_write_json
from lightning_cifar.model import Classifier
from lightning_cifar.study.config import StudyConfig
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


def run_one(run: Run, study: StudyConfig, dm: CIFAR10DataModule, out: Path) -> dict[str, Any]:
    """Train and test one run; returns its result record."""
    run_dir = out / "runs" / run.run_id
    shutil.rmtree(run_dir, ignore_errors=True)  # leftovers of a killed attempt
    pl.seed_everything(run.seed, workers=True, verbose=False)
    model = Classifier(backbone=run.backbone, backbone_kwargs=run.kwargs, **study.recipe["model"])
    params, flops = describe_network(run)
    curve = ValCurve()
    logger = TensorBoardLogger(str(out / "tensorboard"), name=run.run_id, version="", default_hp_metric=False)
    trainer_args = {"enable_progress_bar": False, "enable_model_summary": False, **study.recipe["trainer"]}
    trainer = pl.Trainer(logger=logger, callbacks=[curve], enable_checkpointing=False,
                         default_root_dir=str(run_dir), **trainer_args)
    started = time.perf_counter()
    trainer.fit(model, dm)
    train_time = time.perf_counter() - started
    tested = trainer.test(model, dm, verbose=False)[0]
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
    }
    hparams = {"axis": ",".join(p.axis for p in run.points), "value": str(run.points[0].value),
               "seed": run.seed, "backbone": run.backbone, "params": params, "flops_per_image": flops,
               **{f"kwargs/{k}": str(v) for k, v in run.kwargs.items()}}
    logger.log_hyperparams(hparams, metrics={"hp_metric": result["test_acc"], "study/best_val_acc":
                                             result["best_val_acc"] or 0.0})
    logger.finalize("success")
    atomic_write_json(result_path(out, run), result)
    return result


def execute(runs: list[Run], study: StudyConfig, out: Path, data_dir: Optional[str] = None,
            log: Callable[[str], None] = print, planned: Optional[set[str]] = None) -> int:
    """Run whatever of ``runs`` has no result yet; returns how many were run."""
    out.mkdir(parents=True, exist_ok=True)
    todo = [r for r in runs if not result_path(out, r).is_file()]
    log(f"{len(runs) - len(todo)} of {len(runs)} runs already done; {len(todo)} to run")
    if not todo:
        write_results_csv(out, planned)
        return 0
    data_args = dict(study.recipe["data"])
    if data_dir is not None:
        data_args["data_dir"] = data_dir
    dm = CIFAR10DataModule(**data_args)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    for i, run in enumerate(todo, start=1):
        where = ", ".join(f"{p.axis}={p.value}" for p in run.points)
        log(f"[{i}/{len(todo)}] {run.run_id} ({where})")
        result = run_one(run, study, dm, out)
        write_results_csv(out, planned)
        log(f"    test acc {result['test_acc']:.4f}, {result['train_time_s']:.0f} s")
    return len(todo)
