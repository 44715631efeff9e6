from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

sys.path.insert(0, str(Path(__file__).parent))

from cifar_files import write_tiny_cifar  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_CIFAR = REPO.parent / "shared" / "cifar10"

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


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory) -> Path:
    return write_tiny_cifar(tmp_path_factory.mktemp("tiny_cifar"))


def script(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"console script {name!r} is not on PATH: install the package with pip install -e .")
    return path


def run_cli(args: list[str], cwd: Path, prog: str = "lightning-cifar", env: dict | None = None,
            check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
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


def scalars(log_dir: Path) -> dict[str, list[float]]:
    """Every scalar series in a TensorBoard log folder, read back from the event files."""
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
