"""Muon's orthogonalisation in torch's bfloat16 against float32 (``newton_schulz``), on this CPU.

    python benchmarks/muon_precision.py
    python benchmarks/muon_precision.py --config configs/speedrun-cpu-90.yaml --steps 5 --reps 3

One optimizer step (``MuonWithSGD``: Muon on the filters, SGD on the rest) of the config's network with random
gradients, orthogonalising in bfloat16 (``torch.optim.Muon`` as it is) and in float32 (what the package does on a
CPU without native bfloat16), alternating, best of ``--reps``; the step's seconds, what they come to per epoch at
the config's batch size, and their ratio. Time nothing else while it runs.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import time
from pathlib import Path

import torch
import yaml

from lightning_cifar import CIFAR10DataModule, Classifier
from lightning_cifar.data.datamodule import TRAIN_SIZE
from lightning_cifar.hardware import cpu_has_native_bf16
from lightning_cifar.training.optimizers import MuonWithSGD

REPO = Path(__file__).resolve().parent.parent


def steps_per_epoch(config: dict) -> tuple[int, int]:
    """The config's batch size (the data module's default where it names none) and the optimizer steps of one
    epoch, ``trainer.limit_train_batches`` counted (the 90 % config trains 0.8 of each epoch's batches)."""
    batch = int((config.get("data") or {}).get("batch_size")
                or inspect.signature(CIFAR10DataModule).parameters["batch_size"].default)
    steps = math.ceil(TRAIN_SIZE / batch)
    limit = (config.get("trainer") or {}).get("limit_train_batches", 1.0)
    return batch, (min(int(limit), steps) if isinstance(limit, int) else int(steps * limit))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "speedrun-cpu-94.yaml"))
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per timing")
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text())
    settings = config["model"]
    if settings.get("optimizer") != "muon":
        raise SystemExit(f"--config={args.config}: optimizer={settings.get('optimizer')!r}; this times Muon only")
    model = Classifier(**settings)
    optimizer = model.make_optimizer()  # the one a fit of this config steps, without its schedule
    assert isinstance(optimizer, MuonWithSGD), type(optimizer)
    torch.manual_seed(0)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p)
    batch, epoch_steps = steps_per_epoch(config)
    print(f"{args.config}: {len(optimizer._filters)} filter banks, native bfloat16 (oneDNN): {cpu_has_native_bf16()},"
          f" {torch.get_num_threads()} threads, load average before: {os.getloadavg()[0]:.2f}")
    ways = {"bfloat16 (torch.optim.Muon)": None, "float32 (newton_schulz)": torch.float32}
    best = {name: float("inf") for name in ways}
    for _ in range(args.reps):
        for name, dtype in ways.items():
            optimizer.orthogonalise_dtype = dtype
            optimizer.step()  # the first call of a shape picks its kernels
            start = time.perf_counter()
            for _ in range(args.steps):
                optimizer.step()
            best[name] = min(best[name], (time.perf_counter() - start) / args.steps)
    print("| orthogonalised in | s per step | s per epoch (batch %d, %d steps) |\n| --- | ---: | ---: |"
          % (batch, epoch_steps))
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.3f} | {seconds * epoch_steps:.1f} |")
    (slow, fast) = best.values()
    print(f"bfloat16 / float32: {slow / fast:.2f}x; load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
