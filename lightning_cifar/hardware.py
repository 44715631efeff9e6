"""What this machine's processor runs natively: the one probe the precision default and Muon's
orthogonalisation both ask.

A CPU without AVX-512 BF16 or AMX (AVX2 only) has no bfloat16 kernels: oneDNN and PyTorch convert and
emulate, and a training step of the 94 % config's network measured 17x slower under bfloat16 autocast
than in float32 on a 2-core AVX2 EPYC (benchmarks/RESULTS.md, "A CPU without native bfloat16").
"""

from __future__ import annotations

import torch


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX-512 BF16 or AMX)."""
    try:
        # Private, and the only probe torch has; tests/cli/test_lightning_internals.py fails when it goes.
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
