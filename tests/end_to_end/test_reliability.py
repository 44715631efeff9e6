"""Crashes, resumes, divergence, determinism and unwritable output, on real CLI runs."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from lightning_cifar.checkpoints.writing import AtomicCheckpointIO
from lightning_cifar.cli import main
from lightning_cifar.errors import TrainingDivergedError, UnknownBackboneError
from lightning_cifar.training.callbacks.loss_guard import NonFiniteLossGuard
from tests.helpers.cifar_files import write_tiny_cifar
from tests.helpers.runs import (
    PROBES_ENV,
    SUBPROCESS_TIMEOUT,
    TINY_DATA_ARGS,
    one_core_busy,
    one_line_error,
    run_cli,
    scalars,
    script,
)

PROBES = PROBES_ENV
EPOCHS = 4


@pytest.fixture(scope="module")
def resume_data(tmp_path_factory):
    # 800 training images in batches of 16: 50 steps an epoch, enough to stop one in the middle.
    return write_tiny_cifar(tmp_path_factory.mktemp("resume_data"), per_batch=168, test_size=40)


def fit_args(data, *extra):
    return ["fit", f"--data.data_dir={data}", *TINY_DATA_ARGS, "--data.batch_size=16", f"--trainer.max_epochs={EPOCHS}",
            "--trainer.precision=32-true", "--seed_everything=5", "--model.backbone=convpool",
            '--model.backbone_kwargs={"widths": [8, 16], "kernels": [5, 3], "dropout": 0.1}', *extra]


def final_state(root, version):
    run = root / "lightning_logs" / f"version_{version}"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    return ckpt, scalars(run)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, resume_data):
    root = tmp_path_factory.mktemp("uninterrupted")
    run_cli(fit_args(resume_data), root)
    return final_state(root, 0)


def test_same_seed_on_cpu_gives_identical_metrics_and_weights_on_a_busy_machine(tmp_path, resume_data, uninterrupted):
    # The reference ran on whatever the machine was doing; this one shares it with a process that keeps a core
    # busy. A seeded run keeps one thread count (ThreadsForLoad), so the sums happen in the same order.
    with one_core_busy():
        run_cli(fit_args(resume_data, "--trainer.deterministic=true"), tmp_path)
    ckpt, logged = final_state(tmp_path, 0)
    reference_ckpt, reference = uninterrupted
    assert logged == reference  # every logged value, every step, bit for bit
    for name, value in reference_ckpt["state_dict"].items():
        assert torch.equal(ckpt["state_dict"][name], value), name


def test_a_run_killed_mid_epoch_resumes_from_last_to_the_same_result(tmp_path, resume_data, uninterrupted):
    marker = tmp_path / "hanging"
    hang = ["--trainer.callbacks+=tests.helpers.probes.HangAt", "--trainer.callbacks.epoch=2",
            "--trainer.callbacks.batch=20", f"--trainer.callbacks.marker={marker}"]
    proc = subprocess.Popen([script("lightning-cifar"), *fit_args(resume_data, *hang)], cwd=tmp_path,
                            env={**os.environ, **PROBES}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + SUBPROCESS_TIMEOUT
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert marker.exists(), "the run never reached epoch 2"
    killed = torch.load(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    assert killed["epoch"] == 1 and killed["global_step"] == 100  # what survived: the end of epoch 1

    with one_core_busy():  # the resumed part shares the machine: it must still sum in the same order
        resumed = run_cli(fit_args(resume_data, "--ckpt_path=last"), tmp_path)
    assert "Restoring states from the checkpoint path" in resumed.stdout + resumed.stderr
    ckpt, logged = final_state(tmp_path, 1)
    reference_ckpt, reference = uninterrupted
    assert ckpt["epoch"] == reference_ckpt["epoch"] == EPOCHS - 1
    assert ckpt["global_step"] == reference_ckpt["global_step"] == EPOCHS * 50
    # Same weights, optimizer and RNG state at the end of epoch 1, same batches and augmentations
    # after it: on the CPU the resumed run finishes exactly where the uninterrupted one does.
    assert logged["val/acc"] == reference["val/acc"][2:]
    assert logged["val/loss"] == reference["val/loss"][2:]
    for name, value in reference_ckpt["state_dict"].items():
        assert torch.equal(ckpt["state_dict"][name], value), name


def test_a_diverging_run_stops_naming_epoch_step_and_learning_rate(tmp_path, resume_data, cli):
    poison = ["--trainer.callbacks+=tests.helpers.probes.PoisonWeightsAt", "--trainer.callbacks.epoch=1"]
    result = cli(fit_args(resume_data, *poison), tmp_path, check=False)
    line = one_line_error(result, exit_code=1)
    assert "training loss became nan at global step 50 (epoch 1)" in line and "--model.lr=0.05" in line
    good = torch.load(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    assert good["epoch"] == 0 and all(torch.isfinite(v).all() for v in good["state_dict"].values())


def test_a_huge_learning_rate_stops_at_once(tmp_path, tiny_cifar, cli):
    result = cli(["fit", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, "--model.lr=1e30"], tmp_path, check=False)
    assert "--model.lr=1e+30; try a tenth of it" in one_line_error(result, exit_code=1)


def test_the_guard_reports_the_first_bad_step_not_the_latest():
    guard = NonFiniteLossGuard()
    guard.observe(torch.tensor(2.3), step=0, epoch=0, lr=0.1)
    with pytest.raises(TrainingDivergedError, match="became inf at global step 1 "):
        guard.observe(torch.tensor(float("inf")), step=1, epoch=0, lr=0.1)
    with pytest.raises(TrainingDivergedError, match="became inf at global step 1 "):
        guard.observe(torch.tensor(float("nan")), step=2, epoch=0, lr=0.1)


def test_an_unwritable_log_folder_stops_before_training(tmp_path, tiny_cifar, cli):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = cli(["fit", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS,
                  f"--trainer.default_root_dir={blocker / 'logs'}"], tmp_path, check=False)
    line = one_line_error(result)
    assert result.returncode == 2 and f"cannot write to {blocker / 'logs'}" in line and "Not a directory" in line
    assert "Epoch 0" not in result.stdout + result.stderr and not list(tmp_path.rglob("*.ckpt"))


def test_a_full_disk_stops_before_training(tmp_path, tiny_cifar, monkeypatch, cli):
    full = shutil._ntuple_diskusage(10 * 2**30, 10 * 2**30 - 2**20, 2**20)
    monkeypatch.setattr("lightning_cifar.files.shutil.disk_usage", lambda path: full)
    result = cli(["fit", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS], tmp_path, check=False)
    assert "only 1 MiB free on the disk of" in one_line_error(result)
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("events.out.tfevents.*"))


# -- atomic checkpoints ----------------------------------------------------------------------

SAVER = """
import sys, torch
from lightning_cifar.checkpoints.writing import AtomicCheckpointIO
io, i = AtomicCheckpointIO(), 0
while True:
    i += 1
    io.save_checkpoint({"step": i, "w": torch.full((4_000_000,), float(i))}, sys.argv[1])
"""


def test_killing_a_process_while_it_writes_checkpoints_never_leaves_a_broken_one(tmp_path):
    path = tmp_path / "ckpts" / "last.ckpt"
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)])
        deadline = time.time() + 60
        while not path.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert path.exists(), f"the saver wrote no checkpoint in 60 s (exit code {proc.poll()})"
        time.sleep(0.15 + 0.2 * attempt)  # somewhere inside a later write
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["w"].shape == (4_000_000,) and bool((ckpt["w"] == float(ckpt["step"])).all())
    # A killed write leaves its temp file, never under a name that looks like a checkpoint.
    assert [p.name for p in path.parent.glob("*.ckpt")] == ["last.ckpt"]


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)
    with pytest.raises(Exception):
        io.save_checkpoint({"step": 2, "bad": lambda: None}, path)  # cannot be pickled
    assert torch.load(path, weights_only=True) == {"step": 1} and os.listdir(tmp_path) == ["last.ckpt"]


# -- usage errors --------------------------------------------------------------------------


def test_a_malformed_cli_config_names_file_line_and_column(tmp_path, cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbone: cnn_base\n   lr: 0.1\n")
    line = one_line_error(cli(["fit", "-c", str(bad)], tmp_path, check=False))
    assert f"{bad}: line 3, column 6: malformed YAML" in line
    assert "config nope.yaml does not exist" in one_line_error(cli(["fit", "--config=nope.yaml"], tmp_path, check=False))


def test_debug_flag_shows_the_traceback(tmp_path, tiny_cifar, monkeypatch):
    from lightning_cifar.cli import DEBUG_ENV

    monkeypatch.delenv(DEBUG_ENV, raising=False)  # restored after the test: --debug sets it for child processes
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning-cifar"])
    with pytest.raises(UnknownBackboneError, match="'nope'"):  # raised, not turned into one line and exit 2
        main(["fit", "--model.backbone=nope", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, "--debug"])
