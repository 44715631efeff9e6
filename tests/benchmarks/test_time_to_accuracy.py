"""benchmarks/time_to_accuracy.py --resume: a seed of the 94 % config takes most of an hour, so a run cut short
(a session's end, a kill) must go on with the seeds it lacks, and never mix two recipes in one table."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.runs import REPO, SMALL_NET, SUBPROCESS_TIMEOUT, TINY_DATA_ARGS

SCRIPT = REPO / "benchmarks" / "time_to_accuracy.py"
TINY = [*TINY_DATA_ARGS, *SMALL_NET, "--data.val_split=0", "--trainer.max_epochs=1", "--trainer.precision=32-true"]


def bench(args: list[str], tiny_cifar, extra=TINY) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "configs/cnn-base.yaml", "--targets", "0.05", "--reference-steps", "0",
         "--data-dir", str(tiny_cifar), *args, "--", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.fixture(scope="module")
def seed_0_file(tiny_cifar, tmp_path_factory):
    path = tmp_path_factory.mktemp("tta") / "seed0.json"
    result = bench(["--seeds", "0", "--json", str(path)], tiny_cifar)
    assert result.returncode == 0, result.stderr[-3000:]
    return path


def test_resume_keeps_the_finished_seeds_and_runs_only_the_missing_ones(seed_0_file, tiny_cifar, tmp_path):
    path = tmp_path / "run.json"
    shutil.copy(seed_0_file, path)
    result = bench(["--seeds", "0", "1", "--json", str(path), "--resume"], tiny_cifar)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "seed 0: kept from" in result.stdout and "seed 1: fit" in result.stdout
    assert "seed 0: fit" not in result.stdout  # not trained again
    saved = json.loads(path.read_text())
    assert [r["seed"] for r in saved["runs"]] == [0, 1]
    assert saved["runs"][0] == json.loads(seed_0_file.read_text())["runs"][0]  # kept as it was measured
    assert "over 2 seeds" in result.stdout  # the table covers both


@pytest.mark.parametrize("ours, theirs, named", [
    ([], ["--model.lr=0.5"], "model.lr"),
    (["--from-epoch", "2"], [], "--from-epoch (theirs: 1)"),
], ids=["model-lr", "from-epoch"])
def test_resume_refuses_other_settings_and_leaves_the_file_alone(seed_0_file, tiny_cifar, tmp_path, ours, theirs,
                                                                  named):
    path = tmp_path / "run.json"
    shutil.copy(seed_0_file, path)
    result = bench(["--seeds", "0", "1", "--json", str(path), "--resume", *ours], tiny_cifar, extra=[*TINY, *theirs])
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("--resume: these settings differ from the seeds in")
    assert f"differ from the seeds in {path}: {named};" in last  # that one, and nothing else
    assert path.read_bytes() == seed_0_file.read_bytes()


def test_resume_refuses_to_drop_seeds_the_file_holds(seed_0_file, tiny_cifar, tmp_path):
    path = tmp_path / "run.json"
    shutil.copy(seed_0_file, path)
    result = bench(["--seeds", "1", "--json", str(path), "--resume"], tiny_cifar)
    assert result.returncode != 0
    assert "also holds seeds [0]; add them to --seeds" in result.stderr
    assert path.read_bytes() == seed_0_file.read_bytes()


def test_the_ablation_scored_on_validation_leads_with_the_held_out_accuracy(tiny_cifar, tmp_path):
    """A variant is chosen on validation (``--score val``), never on the test set: each run must validate after its
    last epoch, and the table and the records must carry that accuracy beside the test set's."""
    out = tmp_path / "ablation.json"
    tiny = ["data.verify=false", "data.download=false", "data.val_split=40", "data.batch_size=32",
            "trainer.max_epochs=2", "trainer.precision=32-true", "model.backbone=convpool", "model.tta=mirror_shift",
            'model.backbone_kwargs={"widths": [8, 16], "kernels": [5, 3]}']
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "speedrun_ablation.py"), "configs/cnn-base.yaml", "--target", "0.05",
         "--score", "val", "--from-epoch", "2", "--only", "full", "airbench-schedule", "--data-dir", str(tiny_cifar),
         "--json", str(out), "--keep-runs", str(tmp_path / "runs"), "--set", *tiny],
        cwd=REPO, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-3000:]
    header = next(line for line in result.stdout.splitlines() if line.startswith("| variant"))
    assert header.index("final val acc (chosen on)") < header.index("final test acc")
    saved = json.loads(out.read_text())
    assert saved["score"] == "val"
    for name in ("full", "airbench-schedule"):
        (row,) = saved["results"][name]
        assert 0.0 <= row["final_val_acc"] <= 1.0
        assert [e["epoch"] for e in row["epochs"]] == [2]  # the test set scored after the last epoch only
        assert f"{name} seed 0: val {row['final_val_acc']:.4f}, final" in result.stdout
        assert Path(row["kept_at"]) == tmp_path / "runs" / f"{name}-seed0"

    # The kept weights, scored again by tta_views.py on the split the run held out: its row for the package's
    # mode is what the run itself measured, on validation and on the test set.
    (full,) = saved["results"]["full"]
    views_json = tmp_path / "views.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "tta_views.py"), str(Path(full["kept_at"]) / "checkpoints" /
         "last.ckpt"), "--data-dir", str(tiny_cifar), "--json", str(views_json)],
        cwd=REPO, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-3000:]
    (scored,) = json.loads(views_json.read_text())["runs"]
    package_row = next(label for label in scored["val"] if label.startswith("mirror_shift"))
    assert scored["val_images"] == 40
    assert abs(scored["val"][package_row] - full["final_val_acc"]) < 1e-4
    assert abs(scored["test"][package_row] - full["final_test_acc"]) < 1e-4


def test_keep_runs_that_cannot_be_a_folder_is_refused_before_any_seed_trains(tmp_path):
    """An hour-long seed must not train into a --keep-runs it can never write: the refusal comes first, in one
    line naming the value (here no data folder exists either: a seed that started would fail on that instead)."""
    taken = tmp_path / "a-file"
    taken.write_text("not a folder")
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "time_to_accuracy.py"), "configs/cnn-base.yaml", "--seeds", "0",
         "--reference-steps", "0", "--keep-runs", str(taken / "runs"), "--data-dir", str(tmp_path / "no-data")],
        cwd=REPO, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == (f"--keep-runs {taken / 'runs'}: cannot write to {taken / 'runs'} (Not a directory); choose a"
                         " writable folder with --keep-runs")
    assert "seed 0" not in result.stdout + result.stderr


def test_a_run_folder_that_cannot_be_copied_keeps_the_measurement(tmp_path, capsys):
    import runpy

    keep_run = runpy.run_path(str(REPO / "benchmarks" / "time_to_accuracy.py"))["keep_run"]
    (tmp_path / "runs" / "cfg-seed0").mkdir(parents=True)
    assert keep_run(tmp_path / "gone", tmp_path / "runs", "cfg-seed0") is None
    assert "could not copy the run folder to" in capsys.readouterr().err
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    kept = keep_run(run, tmp_path / "runs", "cfg-seed0")  # the name is taken: a second copy, numbered
    assert kept == tmp_path / "runs" / "cfg-seed0-2" and (kept / "checkpoints" / "last.ckpt").read_bytes() == b"weights"
