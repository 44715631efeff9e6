"""Running a study: each run an ordinary Lightning fit + test, results kept run by run.

Each run is built by the same parser, with the same defaults, as ``lightning-cifar fit``
(:func:`build`); its ``result.json`` records the ``fit`` arguments that reproduce it, the
machine it ran on, accuracy and loss on the validation split, on a fixed clean subset of the
training images and on the test set, and ``test_predictions.npy``: the class predicted for
every test image, so that two configurations can be compared on the same images.

Every finished run writes its files atomically, then ``results.csv`` is rebuilt from all
result files (atomically too). A run whose result file exists is skipped on the next
invocation; a run that was killed half-way left no result file and is redone from scratch.
Several processes (``--shard K/N``) can share one output folder.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from jsonargparse import ArgumentError

from lightning_cifar import registry
from lightning_cifar.cli.lightning_cli import check_output_dirs, make_cli
from lightning_cifar.cli.program import expected_warnings_hidden
from lightning_cifar.data.datamodule import DEFAULT_DATA_DIR, CIFAR10DataModule
from lightning_cifar.data.fingerprint import data_fingerprint
from lightning_cifar.files import atomic_write_bytes, atomic_write_csv, atomic_write_json
from lightning_cifar.models.measure import count_parameters, forward_flops, spatial_profile
from lightning_cifar.study import machine
from lightning_cifar.study.config import StudyConfigError
from lightning_cifar.study.plan import Run

RESULT_VERSION = 2
RESULT_COLUMNS = [
    "axis", "value", "param", "role", "family", "run_id", "config_key", "backbone", "kwargs", "seed", "params",
    "flops_per_image", "receptive_field", "final_map", "kernels", "epochs", "train_time_s", "images_per_s",
    "train_acc", "train_loss", "val_acc", "val_loss", "best_val_acc", "test_acc", "test_loss", "device", "threads",
    "val_acc_curve", "train_acc_curve",
]
PREDICTIONS = "test_predictions.npy"
TEST_LABELS = "test_labels.npy"
TRAIN_SUBSET = 5000  # training images scored clean, in eval mode, after every epoch
TRAIN_SUBSET_SEED = 1234  # which ones: the same for every run


def describe_network(run: Run) -> dict[str, Any]:
    """Parameters, forward FLOPs per image, receptive field, final map size and kernel schedule."""
    net = registry.create_backbone(run.backbone, num_classes=10, **run.kwargs)
    profile = spatial_profile(net)
    blocks = getattr(net, "kernels", None)  # ConvPoolNet: one kernel per block
    kernels = "-".join(map(str, blocks if blocks else profile.conv_kernels))
    return {"params": count_parameters(net), "flops_per_image": forward_flops(net),
            "receptive_field": profile.receptive_field, "final_map": profile.final_map, "kernels": kernels}


class EpochMetrics(pl.Callback):
    """After every epoch: the logged val/acc and val/loss, and accuracy and loss on a fixed subset
    of the training images, clean (no augmentation) and in eval mode, to tell under- from over-fitting.
    A run without validation (``val_split=0``, the notebook anchors) gets the training subset only.

    It draws no random numbers, so the run trains exactly as the same ``fit`` without it.
    """

    def __init__(self, subset: int = TRAIN_SUBSET, seed: int = TRAIN_SUBSET_SEED) -> None:
        self.subset, self.seed = subset, seed
        self.val_acc: list[float] = []
        self.val_loss: list[float] = []
        self.train_acc: list[float] = []
        self.train_loss: list[float] = []

    # Not on_validation_epoch_end: callbacks run before the module's hook, which logs val/acc,
    # so they would read the previous epoch's value.
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        if trainer.sanity_checking or "val/acc" not in metrics:
            return
        self.val_acc.append(round(float(metrics["val/acc"]), 5))
        self.val_loss.append(round(float(metrics["val/loss"]), 5))

    # After the epoch's validation (Lightning validates inside the epoch loop, before this hook), with
    # the same weights it scored; and also where there is no validation at all.
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        acc, loss = self._score_training_subset(trainer, pl_module)
        self.train_acc.append(round(acc, 5))
        self.train_loss.append(round(loss, 5))

    @torch.no_grad()
    def _score_training_subset(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[float, float]:
        dm = trainer.datamodule
        images, labels = dm.train_set.images, dm.train_set.labels
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
        index = order[: self.subset].sort().values.to(images.device)
        was_training = pl_module.training
        pl_module.eval()
        correct, loss_sum = 0, 0.0
        with trainer.precision_plugin.forward_context():
            for chunk in index.split(dm.eval_batch_size):
                x = dm.to_float(images[chunk].to(pl_module.device))
                y = labels[chunk].to(pl_module.device)
                logits = pl_module(x)
                correct += int((logits.argmax(1) == y).sum())
                loss_sum += float(pl_module.loss(logits, y)) * len(chunk)
        pl_module.train(was_training)
        return correct / len(index), loss_sum / len(index)


class TestPredictions(pl.Callback):
    """The class predicted for every test image, in test-set order (the test loader does not shuffle)."""

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.batches = []

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self.batches.append(outputs.argmax(1))  # stays on the device until the end: no sync per batch

    def predictions(self) -> np.ndarray:
        return torch.cat(self.batches).cpu().numpy().astype(np.uint8)


def result_path(out: Path, run: Run) -> Path:
    return out / "runs" / run.run_id / "result.json"


def finished(out: Path, run: Run) -> bool:
    """Whether ``run`` has a result this version reads. A result file it cannot read (broken JSON, another version's
    format, another run's id) is refused in one line: skipped, the run would be planned again at every turn (the
    launchers looped on it forever); trained again, the file would be lost."""
    path = result_path(out, run)
    if not path.is_file():
        return False
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = f"not readable as JSON ({' '.join(str(exc).split())[:120]})"
    else:
        if not isinstance(result, dict):
            problem = f"holds a JSON {type(result).__name__}, not a run's result"
        elif result.get("version") != RESULT_VERSION:
            problem = f"is a result of format version {result.get('version')!r}; this version reads {RESULT_VERSION}"
        elif result.get("run_id") != run.run_id:
            problem = f"is the result of run {result.get('run_id')!r}, not of {run.run_id}"
        else:
            return True
    raise StudyConfigError(f"{path}: {problem}; move it (or its run folder) out of the way to train run {run.run_id}"
                           " again")


def load_results(out: Path) -> list[dict[str, Any]]:
    results = []
    for path in sorted((out / "runs").glob("*/result.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # not a result: the launchers refuse it in one line (finished), the report leaves it out
        if isinstance(result, dict):
            results.append(result)
    return results


def rows_of(result: dict[str, Any], points: list[Any]) -> list[list[Any]]:
    """One results.csv row per point the run serves in the current plan."""
    rows = []
    for point in points:
        values = {**result, "axis": point.axis, "value": json.dumps(point.value), "param": point.param,
                  "role": ",".join(result["roles"]), "kwargs": json.dumps(result["kwargs"], sort_keys=True),
                  "val_acc_curve": json.dumps(result["val_acc_curve"]),
                  "train_acc_curve": json.dumps(result["train_acc_curve"])}
        rows.append([values.get(c, "") for c in RESULT_COLUMNS])
    return rows


def run_labels(run: Run) -> dict[str, Any]:
    """The roles and points a run serves in a plan, as its result.json records them."""
    return {"roles": list(run.roles),
            "points": [{"axis": p.axis, "value": p.value, "param": p.param, "settings": p.settings}
                       for p in run.points]}


def write_results_csv(out: Path, plan: list[Run]) -> Path:
    """results.csv from the finished runs of ``plan``, each with the roles and points it serves in the plan (not
    the ones it was trained for: a run trained while tuning was pending serves other points once the winner is
    known: the first candidate stops being the main run, the winner becomes it). A result.json whose labels the
    plan has changed is rewritten with the plan's. Results of an earlier version of the config do not mix in."""
    results = {r["run_id"]: r for r in load_results(out) if r.get("version") == RESULT_VERSION}
    rows = [RESULT_COLUMNS]
    for run in plan:
        result = results.get(run.run_id)
        if result is None:
            continue
        now = json.loads(json.dumps(run_labels(run)))  # as the file holds it: lists, not tuples
        if {k: result.get(k) for k in now} != now:
            result.update(now)
            atomic_write_json(result_path(out, run), result)
        rows += rows_of(result, list(run.points))
    path = out / "results.csv"
    atomic_write_csv(path, rows)
    return path


def recipe_config(run: Run, threads: int, data_dir: Optional[str] = None) -> dict[str, Any]:
    """What ``lightning-cifar fit`` is given for this run: its configuration, seed and thread count.

    The thread count is the study's (``--threads``), the same whichever launcher runs it: a different count sums in
    a different order, so the same run would end a few predictions apart (0.355 against 0.350 on the tiny data when
    Ray's one thread per run met the sequential launcher's two). It is recorded with the run, not hashed into its id:
    it changes rounding, not the experiment, and the study's first 124 runs (whose counts followed the load) keep
    serving their points."""
    config = {section: dict(values) for section, values in run.config.items()}
    if data_dir is not None:
        config["data"]["data_dir"] = data_dir
    return {"seed_everything": run.seed, **config, "threads": {"count": threads}}


def fit_arguments(config: dict[str, Any]) -> list[str]:
    """``config`` as ``lightning-cifar fit`` arguments, to rerun one study run by hand."""
    words = [f"--seed_everything={config['seed_everything']}"]
    for section in ("trainer", "model", "data", "threads"):
        for key, value in config.get(section, {}).items():
            text = value if isinstance(value, str) else json.dumps(value)
            words.append(f"--{section}.{key}={text}")
    return words


# Presentation defaults of a study run (a recipe may override them); nothing that changes results.
STUDY_TRAINER_DEFAULTS = {"enable_progress_bar": False, "enable_model_summary": False}


def _class_path(cls: type) -> dict[str, str]:
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}"}


def run_config(run: Run, out: Path, threads: int, data_dir: Optional[str] = None) -> dict[str, Any]:
    """The full configuration of one run: its recipe, plus where the study keeps logs and what it records.
    Checkpoints are not kept (the study records metrics) and the per-run test report is off."""
    config = recipe_config(run, threads, data_dir)
    logger = {"class_path": "pytorch_lightning.loggers.TensorBoardLogger",
              "init_args": {"save_dir": str(out / "tensorboard"), "name": run.run_id, "version": "",
                            "default_hp_metric": False}}
    config["trainer"] = {**STUDY_TRAINER_DEFAULTS, **config["trainer"], "logger": logger,
                         "enable_checkpointing": False, "default_root_dir": str(out / "runs" / run.run_id),
                         "callbacks": [_class_path(EpochMetrics), _class_path(TestPredictions)]}
    config["report"] = {"enabled": False}
    return config


def build(config: dict[str, Any]) -> Any:
    """The model, data module and trainer of ``config``, made exactly as ``lightning-cifar fit`` makes them
    (:func:`lightning_cifar.cli.lightning_cli.make_cli`); a value fit would refuse is refused here, in one line."""
    try:
        return make_cli(config, run=False, exit_on_error=False)
    except ArgumentError as exc:
        text = " ".join(str(exc).split())
        raise StudyConfigError(f"a study run's configuration is refused by fit's parser: {text}") from None


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def clear_run(out: Path, run: Run) -> None:
    """Remove what a killed attempt of ``run`` left in ``out``."""
    shutil.rmtree(out / "runs" / run.run_id, ignore_errors=True)
    shutil.rmtree(out / "tensorboard" / run.run_id, ignore_errors=True)


def train_run(run: Run, workdir: Path, threads: int, data_dir: Optional[str] = None,
              loaded: Optional[CIFAR10DataModule] = None) -> tuple[dict[str, Any], dict[str, bytes], CIFAR10DataModule]:
    """Train and test one run, with its logs under ``workdir``. Returns its result record, the files
    :func:`save_run` writes next to it (by path relative to the output folder), and its data module (whose
    loaded images the next run with the same data settings reuses)."""
    clear_run(workdir, run)
    # Before build(), which seeds: building this probe network draws from the RNG, and the run's
    # shuffling and augmentation must draw exactly what `lightning-cifar fit` draws.
    network = describe_network(run)
    cli = build(run_config(run, workdir, threads, data_dir))
    model, dm, trainer = cli.model, cli.datamodule, cli.trainer
    if loaded is not None and loaded.hparams == dm.hparams:
        # Same files, split and settings: reading and checking 180 MB again would only cost time.
        dm.classes, dm.train_set, dm.val_set, dm.test_set = loaded.classes, loaded.train_set, loaded.val_set, loaded.test_set
    epochs = next(cb for cb in trainer.callbacks if isinstance(cb, EpochMetrics))
    predicted = next(cb for cb in trainer.callbacks if isinstance(cb, TestPredictions))
    check_output_dirs(trainer, model, fitting=True)
    with expected_warnings_hidden():
        started = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        train_time = time.perf_counter() - started
        tested = trainer.test(model, datamodule=dm, verbose=False)[0]
    images = trainer.current_epoch * len(dm.train_dataloader()) * dm.batch_size
    labels = dm.test_set.labels.cpu().numpy().astype(np.uint8)
    files = {TEST_LABELS: _npy(labels), f"runs/{run.run_id}/{PREDICTIONS}": _npy(predicted.predictions())}
    last = lambda values: values[-1] if values else None  # noqa: E731
    result = {
        "version": RESULT_VERSION,
        "run_id": run.run_id,
        "config_key": run.config_key,
        **run_labels(run),
        "family": run.family,
        "backbone": run.backbone,
        "kwargs": run.kwargs,
        "seed": run.seed,
        **network,
        "epochs": trainer.current_epoch,
        "train_time_s": round(train_time, 2),
        "images_per_s": round(images / train_time, 1),
        "val_acc": last(epochs.val_acc),
        "val_loss": last(epochs.val_loss),
        "best_val_acc": max(epochs.val_acc) if epochs.val_acc else None,
        "train_acc": last(epochs.train_acc),
        "train_loss": last(epochs.train_loss),
        "test_acc": round(float(tested["test/acc"]), 5),
        "test_loss": round(float(tested["test/loss"]), 5),
        "test_correct": int((predicted.predictions() == labels).sum()),
        "val_acc_curve": epochs.val_acc,
        "val_loss_curve": epochs.val_loss,
        "train_acc_curve": epochs.train_acc,
        "train_loss_curve": epochs.train_loss,
        "threads": threads,
        "device": machine.describe(model.device, threads),
        "data_fingerprint": data_fingerprint(dm.data_dir),
        "software": machine.software(),
        "fit_arguments": fit_arguments(recipe_config(run, threads, data_dir)),
    }
    hparams = {"roles": ",".join(run.roles), "points": "; ".join(f"{p.axis}={p.value}" for p in run.points),
               "seed": run.seed, "backbone": run.backbone, "params": network["params"],
               "flops_per_image": network["flops_per_image"],
               **{f"kwargs/{k}": str(v) for k, v in run.kwargs.items()}}
    trainer.logger.log_hyperparams(hparams, metrics={"hp_metric": result["test_acc"],
                                                     "study/best_val_acc": result["best_val_acc"] or 0.0})
    trainer.logger.finalize("success")
    return result, files, dm


def save_run(out: Path, run: Run, result: dict[str, Any], files: dict[str, bytes]) -> None:
    """Write a finished run's files into ``out``, its result file last: a result file means the run is complete."""
    for relative, data in files.items():
        if relative == TEST_LABELS and (out / TEST_LABELS).is_file():
            continue  # the same labels for every run
        atomic_write_bytes(out / relative, data)
    atomic_write_json(result_path(out, run), result)


def run_one(run: Run, out: Path, threads: int, data_dir: Optional[str] = None,
            loaded: Optional[CIFAR10DataModule] = None) -> tuple[dict[str, Any], CIFAR10DataModule]:
    """Train, test and save one run in this process, its logs straight into ``out``."""
    result, files, dm = train_run(run, out, threads, data_dir, loaded)
    save_run(out, run, result, files)
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


def check_same_data(out: Path, study_data_dir: Optional[str]) -> None:
    """Refuse, in one line, to add runs to ``out`` when its finished runs were trained on other data than the folder
    this invocation reads (by the files' fingerprint; the path alone says nothing): their numbers would be reported
    as this data's. Runs of lightning-cifar 0.2 recorded no fingerprint and are not checked."""
    where = study_data_dir or DEFAULT_DATA_DIR
    current = data_fingerprint(where)
    if current is None:
        return  # no data there: the first run says so
    recorded = [r.get("data_fingerprint") for r in load_results(out)]
    other = sorted({f for f in recorded if f not in (None, current)})
    if other:
        count = sum(f in other for f in recorded)
        raise StudyConfigError(
            f"--out {out}: {count} of its runs were trained on other data (fingerprint {', '.join(other)}) than"
            f" {where} holds ({current}); a study's results come from one dataset: use another --out, or point"
            " --data.data_dir at the data those runs came from")


def check_runs(runs: list[Run], out: Path, threads: int, data_dir: Optional[str] = None) -> dict[str, Any]:
    """Every run's configuration through fit's parser, before the first run trains: a value fit
    would refuse stops the study now, not hours later. Returns each run's parsed configuration
    (fit's defaults filled in), by run id."""
    if not runs:
        return {}
    for run in runs:
        finished(out, run)  # a result file that cannot be read stops the study before anything trains
    with quiet_lightning():  # only the parser is wanted: no "GPU available" lines before the plan
        parser = build(run_config(runs[0], out, threads, data_dir)).parser
    parsed = {}
    for run in runs:
        try:
            parsed[run.run_id] = parser.parse_object(run_config(run, out, threads, data_dir))
        except Exception as exc:  # jsonargparse's ArgumentError, or a type it cannot convert
            text = " ".join(str(exc).split())
            raise StudyConfigError(f"run {run.run_id}: refused by fit's parser: {text}") from None
    return parsed
