"""Which precision runs fast where: the default the CLI trains in, and the warning for bfloat16 that a CPU
only emulates.

bfloat16 autocast is the fast path on a CPU with AVX-512 BF16 or AMX, where oneDNN runs it natively, and
far the slowest on a CPU without them (``lightning_cifar.hardware``). The configs therefore leave the
precision to :func:`default_precision`; one that asks for bfloat16 by name still gets it, with a warning.
"""

from __future__ import annotations

from typing import Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.accelerators import CPUAccelerator

from lightning_cifar.hardware import cpu_has_native_bf16

# Double precision: Lightning's names for it. Our data and input standardisation are float32.
UNSUPPORTED_PRECISION = ("64", "64-true", "double")


def default_precision() -> str:
    """bf16 autocast where the hardware does bf16 natively, else what runs fast there."""
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def emulated_bf16_warning(trainer: pl.Trainer) -> Optional[str]:
    """The one-line warning for a trainer set to bfloat16 on a CPU that emulates it, or None."""
    precision = str(trainer.precision)
    if not precision.startswith("bf16") or not isinstance(trainer.accelerator, CPUAccelerator):
        return None
    if cpu_has_native_bf16():
        return None
    return (f"--trainer.precision={precision} on a CPU without native bfloat16 (no AVX-512 BF16 or AMX): it is"
            f" emulated, measured 17x slower than float32 on a 2-core AVX2 CPU; --trainer.precision=32-true"
            f" (or leaving it unset) trains natively here")
