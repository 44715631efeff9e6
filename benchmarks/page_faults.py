"""The training step of a config's network with glibc's default allocator and with the memory kept for reuse
(``lightning_cifar/tools/allocator.py``, what every CPU run of ours does unless ``--allocator.enabled=false``).

    python benchmarks/page_faults.py
    python benchmarks/page_faults.py --config configs/speedrun-cpu-90.yaml --batch 500 --steps 8 --reps 5

Each measurement is a fresh process (the allocator's state is the process's), the two alternating: forward and
backward of one random batch, no optimizer, no data, no Lightning, ``--steps`` steps after two of warm-up. It
prints wall seconds, user and kernel CPU seconds and minor page faults per step, and the process's peak memory:
the kernel's share is the cost of mapping, zeroing and unmapping the step's large blocks afresh. Time nothing
else while it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = ("glibc defaults", "kept for reuse")


def worker(config: str, batch: int, steps: int, keep: bool) -> dict:
    import torch

    from lightning_cifar.tools import allocator

    sys.path.insert(0, str(HERE))
    from network_cost_vs_airbench import ours, step

    if keep and not allocator.keep_freed_memory(allocator.glibc()):
        raise SystemExit("glibc refused the settings")
    torch.manual_seed(0)
    net = ours(config).train()
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    for _ in range(2):
        step(net, x, y, "fp32")
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step(net, x, y, "fp32")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": wall / steps, "user_s": (after.ru_utime - before.ru_utime) / steps,
            "kernel_s": (after.ru_stime - before.ru_stime) / steps,
            "faults": (after.ru_minflt - before.ru_minflt) / steps, "peak_mib": after.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(HERE.parent / "configs" / "speedrun-cpu-94.yaml"))
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--reps", type=int, default=5, help="alternating pairs of fresh processes")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.config, args.batch, args.steps, args.worker == MODES[1])))
        return
    from lightning_cifar.tools.allocator import glibc

    if glibc() is None:
        raise SystemExit("this C library is not glibc: the allocator setting changes nothing here")
    print(f"{args.config}, batch {args.batch}, {args.steps} steps per process, float32, {os.cpu_count()} CPUs,"
          f" load average before: {os.getloadavg()[0]:.2f}", flush=True)
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for rep in range(args.reps):
        for mode in MODES:
            cmd = [sys.executable, __file__, "--worker", mode, "--config", args.config, "--batch", str(args.batch),
                   "--steps", str(args.steps)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, timeout=1800)
            run = json.loads(out.stdout.splitlines()[-1])
            runs[mode].append(run)
            print(f"  rep {rep}: {mode}: {run['wall_s']:.3f} s per step, kernel {run['kernel_s']:.3f} CPU-s,"
                  f" {run['faults']:,.0f} page faults", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print(f"| allocator | wall s per step (median of {args.reps}) | user CPU-s | kernel CPU-s | minor page faults"
          " | peak memory (MiB) | against glibc defaults |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    reference = statistics.median(r["wall_s"] for r in runs[MODES[0]])
    for mode, rs in runs.items():
        med = {key: statistics.median(r[key] for r in rs) for key in rs[0]}
        print(f"| {mode} | {med['wall_s']:.3f} | {med['user_s']:.3f} | {med['kernel_s']:.3f} | {med['faults']:,.0f}"
              f" | {med['peak_mib']:,.0f} | {med['wall_s'] / reference:.2f}x time |")
    wins = sum(k["wall_s"] < d["wall_s"] for d, k in zip(runs[MODES[0]], runs[MODES[1]]))
    print(f"\nkept for reuse faster in {wins} of {args.reps} alternating pairs")


if __name__ == "__main__":
    main()
