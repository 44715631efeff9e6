"""Batch norm + ReLU forward and backward, scale trained vs. frozen (requires_grad=False), bf16 autocast,
channels_last, 500 x 64 x 16 x 16: does the frozen scale change the speed? Three alternating reps, 10 timed steps each.

    python benchmarks/speedrun/probes/batchnorm_frozen_scale.py
"""
import time

import torch
from torch import nn

torch.manual_seed(0)
x0 = torch.randn(500, 64, 16, 16).contiguous(memory_format=torch.channels_last)
res = {}
for rep in range(3):
    for frozen in (False, True):
        bn = nn.BatchNorm2d(64)
        bn.weight.requires_grad_(not frozen)
        x = x0.clone().requires_grad_(True)
        ts = []
        for i in range(12):
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = torch.relu(bn(x))
            y.float().sum().backward()
            ts.append(time.perf_counter() - t)
        res.setdefault(frozen, []).append(sum(ts[2:]) / 10)
for k, v in res.items(): print("frozen scale" if k else "trained scale", [f"{1000*t:.1f} ms" for t in v])
