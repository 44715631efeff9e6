"""Which machine a run trained on, recorded in every result so that a report merged from several
machines (shards, a GPU and a CPU) can list them all."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device, threads: int) -> str:
    """The device a run trained on, e.g. 'NVIDIA H200' or 'AMD EPYC, 2 threads'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {threads} thread{'s' if threads != 1 else ''}"


def software() -> str:
    import pytorch_lightning as pl

    return f"Python {platform.python_version()}, torch {torch.__version__}, pytorch-lightning {pl.__version__}"
