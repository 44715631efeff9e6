"""The fixtures every test folder shares: the tiny dataset in the official format, a data module on it, and
the command line run in this process. Plain helpers live in tests/helpers."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import pytest

from tests.helpers.cifar_files import write_tiny_cifar
from tests.helpers.runs import PROG


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory) -> Path:
    return write_tiny_cifar(tmp_path_factory.mktemp("tiny_cifar"))


@pytest.fixture
def tiny_dm(tiny_cifar):
    from lightning_cifar import CIFAR10DataModule

    return CIFAR10DataModule(tiny_cifar, verify=False, download=False, val_split=40, batch_size=32)


@pytest.fixture
def cli(monkeypatch, capfd, caplog) -> Callable[..., subprocess.CompletedProcess]:
    """``lightning_cifar.cli.main`` in this process: parse-only commands and early errors without
    the seconds a fresh interpreter spends importing Lightning. Same result shape as run_cli;
    Lightning's log lines (which pytest's log capture takes in this process) come first in stderr."""
    from lightning_cifar.cli import DEBUG_ENV, main

    def run(args: list[str], cwd: Path, env: Optional[dict] = None, check: bool = True) -> subprocess.CompletedProcess:
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", [PROG])
        # Restored afterwards whatever main sets (--debug sets DEBUG_ENV, seeding sets PL_GLOBAL_SEED).
        for name in (DEBUG_ENV, "PL_GLOBAL_SEED"):
            monkeypatch.delenv(name, raising=False)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        capfd.readouterr()
        caplog.clear()
        try:
            with caplog.at_level(logging.INFO):
                main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capfd.readouterr()
        logged = "".join(f"{record.getMessage()}\n" for record in caplog.records)
        err = logged + err
        result = subprocess.CompletedProcess(args, code, out, err)
        if check and code != 0:
            raise AssertionError(f"{PROG} {' '.join(args)} exited {code}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-5000:]}")
        return result

    return run
