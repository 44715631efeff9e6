"""`lightning-cifar study --launcher ray`: the study's runs as tasks of a real local Ray instance (no mocks)."""

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.runs import SUBPROCESS_TIMEOUT, one_line_error
from tests.helpers.studies import tiny_study, write_study

ray = pytest.importorskip("ray", reason="the Ray launcher's tests need the ray extra")

FOUR_RUNS = {"seeds": [0]}  # width 0.5, the base network (width 1 = 2 blocks), 1 block, the MLP baseline


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the whole module (starting one costs seconds); runs get one CPU each."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def results(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("runs/*/result.json")}


def csv_run_ids(out: Path) -> list[str]:
    import csv

    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    seen: dict[str, set] = {}
    for row in rows:  # a run serving several points has one row per point, never two rows for one point
        assert (row["axis"], row["value"]) not in seen.setdefault(row["run_id"], set())
        seen[row["run_id"]].add((row["axis"], row["value"]))
    return sorted(seen)


def csv_without_timings(out: Path) -> list[dict]:
    """results.csv less the columns that measure the machine (seconds, images/s), which differ between any two runs."""
    import csv

    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in row.items() if k not in ("train_time_s", "images_per_s")} for row in rows]


def test_a_study_through_ray_gives_the_sequential_results_csv(tmp_path, tiny_cifar, cli, ray_instance):
    import fcntl

    from lightning_cifar.study.config import load_study
    from lightning_cifar.study.progress import current_state

    # No thread setting on either side: Ray gives each task's process OMP_NUM_THREADS=1 (one CPU per run), and the
    # study still trains every run with its own count (this process's), as the sequential launcher does.
    config = write_study(tmp_path / "study.yaml", tiny_study(tiny_cifar, **FOUR_RUNS))
    cli(["study", "-c", str(config), "--out", str(tmp_path / "sequential")], tmp_path)
    # One run is locked as a sequential study locks the run it trains: the Ray driver leaves it to that process...
    out = tmp_path / "ray"
    held = current_state(load_study(str(config)), out, 0, 1).todo[0].run_id
    (out / ".locks").mkdir(parents=True)
    with open(out / ".locks" / held, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        printed = cli(["study", "-c", str(config), "--out", str(out), "--launcher", "ray"], tmp_path).stdout
    assert f"{held}: another process is training it; left to that process" in printed
    assert "1 runs are being trained by another process" in printed and held not in results(out)
    assert len(results(out)) == 3 and csv_run_ids(out) == sorted(results(out))
    # ... and, released (that process ended without a result), the next study trains it.
    printed += cli(["study", "-c", str(config), "--out", str(out), "--launcher", "ray"], tmp_path).stdout
    assert "3 of 4 runs already done; 1 to run" in printed
    sequential, on_ray = results(tmp_path / "sequential"), results(tmp_path / "ray")
    assert len(on_ray) == 4 and set(on_ray) == set(sequential)
    assert csv_without_timings(tmp_path / "ray") == csv_without_timings(tmp_path / "sequential")
    import torch

    assert {r["threads"] for r in [*on_ray.values(), *sequential.values()]} == {torch.get_num_threads()}
    for run_id, result in on_ray.items():
        assert result["val_acc_curve"] == sequential[run_id]["val_acc_curve"], run_id
        assert f"--threads.count={result['threads']}" in result["fit_arguments"]
        same = [np.load(tmp_path / side / "runs" / run_id / "test_predictions.npy") for side in ("sequential", "ray")]
        assert np.array_equal(*same)
        assert list((tmp_path / "ray" / "tensorboard" / run_id).glob("events.out.tfevents.*"))  # logs came back
    assert csv_run_ids(tmp_path / "ray") == sorted(on_ray)
    assert (tmp_path / "ray" / "report.md").is_file()
    # One line per finished run, with its accuracy and what is left.
    finished = [line for line in printed.splitlines() if ": test acc " in line]
    assert len(finished) == 4 and "0 runs left in this shard" in finished[-1] and held in finished[-1]

    again = cli(["study", "-c", str(config), "--out", str(tmp_path / "ray"), "--launcher", "ray"], tmp_path).stdout
    assert "4 of 4 runs already done; 0 to run" in again


def worker_pids(name: str = "ray::train_on_worker") -> list[int]:
    """Ray names a worker process after the task it is running."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(name.encode()):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_a_run_whose_worker_is_killed_is_retried_and_kept_once(tmp_path, tiny_cifar, ray_instance):
    from lightning_cifar.study.config import load_study
    from lightning_cifar.study.launchers.ray import execute_on_ray

    config = write_study(tmp_path / "study.yaml", tiny_study(tiny_cifar, **FOUR_RUNS))
    out = tmp_path / "out"
    lines, failures = [], []

    def drive():  # the driver in a thread of this process: it reuses the module's Ray instance and its workers
        try:
            execute_on_ray(load_study(str(config)), out, 0, 1, 1, log=lines.append)
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    deadline = time.time() + SUBPROCESS_TIMEOUT
    killed = None
    while killed is None and driver.is_alive() and time.time() < deadline:
        pids = worker_pids()
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
        time.sleep(0.02)
    driver.join(timeout=max(1.0, deadline - time.time()))
    assert killed is not None, "no worker was seen running a study run"
    assert not driver.is_alive() and not failures, (failures, lines)
    assert len(results(out)) == 4 and csv_run_ids(out) == sorted(results(out))
    assert sum(": test acc " in line for line in lines) == 4  # every run reported once, the retried one too


def test_a_data_folder_missing_on_the_workers_stops_the_study_in_one_line(tmp_path, tiny_cifar, cli, ray_instance):
    config = write_study(tmp_path / "study.yaml", tiny_study(tiny_cifar, **FOUR_RUNS))
    result = cli(["study", "-c", str(config), "--out", str(tmp_path / "out"), "--launcher", "ray",
                  "--data-dir", str(tmp_path / "nowhere")], tmp_path, check=False)
    line = one_line_error(result)
    assert "has no cifar-10-batches-py/ on Ray node" in line and "nowhere" in line
    assert not list((tmp_path / "out").glob("runs/*/result.json"))


def test_without_ray_installed_the_error_names_the_extra(tmp_path, tiny_cifar, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError, as where it is missing
    config = write_study(tmp_path / "study.yaml", tiny_study(tiny_cifar, **FOUR_RUNS))
    line = one_line_error(cli(["study", "-c", str(config), "--out", str(tmp_path / "out"), "--launcher", "ray"],
                              tmp_path, check=False))
    assert line.endswith("--launcher ray needs Ray, which is not installed: pip install 'lightning-cifar[ray]'")


def test_ray_options_without_the_ray_launcher_are_refused(tmp_path, tiny_cifar, cli):
    config = write_study(tmp_path / "study.yaml", tiny_study(tiny_cifar, **FOUR_RUNS))
    line = one_line_error(cli(["study", "-c", str(config), "--out", str(tmp_path / "out"), "--gpus-per-run", "0.25"],
                              tmp_path, check=False))
    assert "--gpus-per-run only apply to --launcher ray" in line
