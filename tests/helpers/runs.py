"""Runs of the command line for the tests: in a subprocess or in this process, a quiet Trainer, TensorBoard
scalars read back, and the check that an error is one line."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[2]
REAL_CIFAR = REPO.parent / "shared" / "cifar10"
PROG = "lightning-cifar"
# Every wait on a child process or a file has a deadline.
SUBPROCESS_TIMEOUT = 300
# For runs that load tests.helpers.probes callbacks by class path.
PROBES_ENV = {"PYTHONPATH": str(REPO)}

# Arguments that point the CLI at the tiny dataset and keep runs to seconds.
TINY_DATA_ARGS = [
    "--data.verify=false",
    "--data.download=false",
    "--data.val_split=40",
    "--data.batch_size=32",
    "--data.eval_batch_size=50",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.log_every_n_steps=1",
]
# A network small enough that a few epochs on the tiny data take a second or two.
SMALL_NET = ["--model.backbone=convpool", '--model.backbone_kwargs={"widths": [8, 16], "kernels": [5, 3]}']


def trainer(tmp_path, callbacks=None, **kwargs):
    """A Trainer on the CPU that writes nothing: no logger, no checkpoints, no progress bar."""
    import pytorch_lightning as pl

    return pl.Trainer(default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, callbacks=callbacks or [], **kwargs)


def script(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"console script {name!r} is not on PATH: install the package with pip install -e .")
    return path


def run_cli(args: list[str], cwd: Path, prog: str = PROG, env: dict | None = None,
            check: bool = True, timeout: float = SUBPROCESS_TIMEOUT) -> subprocess.CompletedProcess:
    """The console script in a fresh process (for what needs one: training runs, DDP, kills)."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    result = subprocess.run(
        [script(prog), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{prog} {' '.join(args)} exited {result.returncode}\nstdout:\n{result.stdout[-3000:]}"
            f"\nstderr:\n{result.stderr[-5000:]}"
        )
    return result


def fit_in_process(args: list[str], cwd: Path) -> None:
    """``lightning-cifar ARGS`` in this process, for module-scoped fixtures (no output kept)."""
    from lightning_cifar.cli import DEBUG_ENV, main

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setattr(sys, "argv", [PROG])
        for name in (DEBUG_ENV, "PL_GLOBAL_SEED"):
            mp.delenv(name, raising=False)
        try:
            main(list(args))
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise AssertionError(f"{PROG} {' '.join(args)} exited {exc.code}") from None


def one_line_error(result: subprocess.CompletedProcess, exit_code: int = 2) -> str:
    """The error is one line, the last one, after at most Lightning's own info lines; no traceback."""
    assert result.returncode == exit_code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    assert "Traceback" not in result.stderr and len(errors) == 1 and errors[0] == lines[-1], result.stderr
    assert errors[0].startswith(f"{PROG}: error: ")
    return errors[0]


def scalars(log_dir: Path) -> dict[str, list[float]]:
    """Every scalar series in a TensorBoard log folder, read back from the event files."""
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def tiny_test_set(root: Path):
    """The tiny test set as the model takes it: float images in [0, 1], and the labels."""
    from lightning_cifar import CIFAR10DataModule

    dm = CIFAR10DataModule(root, verify=False, download=False)
    dm.setup("test")
    return dm.to_float(dm.test_set.images), dm.test_set.labels


@contextlib.contextmanager
def one_core_busy(seconds: float = SUBPROCESS_TIMEOUT) -> Iterator[subprocess.Popen]:
    """Another process spinning on one core while the block runs, as on a shared laptop; it stops by itself
    after ``seconds`` should the block never end, and is killed when it does."""
    spin = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"
    process = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.5)  # under way before the run starts
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)
