"""The networks alone: forward + backward of our 94 % config's network and airbench94's, in one process.

    python benchmarks/network_cost_vs_airbench.py
    python benchmarks/network_cost_vs_airbench.py --config configs/speedrun-cpu-94.yaml --batches 500 1024

``profile_vs_airbench.py`` compares whole training steps with the profiler on, which adds a cost per operator
call (ours makes twice the calls per image at batch 500); ``vs_airbench.py`` compares whole runs. This isolates
the networks: the same random batch through each, both under bfloat16 autocast on float32 weights (airbench's
``autocast`` mode in ``airbench_cpu.py``, as ours trains), its loss's backward pass, no optimizer, no data
pipeline, no Lightning. The two alternate, best of ``--reps``. The gap between this ratio and the whole runs'
is the rest: the training loop, the optimizer, airbench's pure bfloat16 weights and its frozen whitening bias.
Time nothing else while it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import airbench_cpu  # noqa: E402


def ours(config: str) -> torch.nn.Module:
    from lightning_cifar import Classifier

    model = Classifier(**yaml.safe_load(Path(config).read_text())["model"])
    for layer in model.backbone.modules():  # set from images in a fit; any filters cost the same here
        if hasattr(layer, "initialise"):
            layer.initialise(torch.randn(64, 3, 32, 32))
    return model


def step(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    torch.nn.functional.cross_entropy(out.float(), y).backward()
    net.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(HERE.parent / "configs" / "speedrun-cpu-94.yaml"))
    parser.add_argument("--batches", type=int, nargs="+", default=[500, 1024])
    parser.add_argument("--images", type=int, default=6000, help="images per timing")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    try:
        import airbench
    except ImportError:
        raise SystemExit("needs the airbench package: pip install 'lightning-cifar[bench]'") from None
    airbench_cpu.run_on_cpu("autocast")  # its .half() keeps float32 weights; autocast as ours
    nets = {"airbench94": airbench.make_net94().train(), "ours": ours(args.config).train()}
    print(f"load average before: {os.getloadavg()[0]:.2f}, {torch.get_num_threads()} threads")
    print("| batch | airbench94 s / 1,000 images | ours | ours / airbench94 |\n| ---: | ---: | ---: | ---: |")
    for batch in args.batches:
        x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (batch,))
        best = {name: float("inf") for name in nets}
        steps = max(3, args.images // batch)
        for _ in range(args.reps):
            for name, net in nets.items():
                for _ in range(2):  # oneDNN picks its kernels on the first calls of a shape
                    step(net, x, y)
                start = time.perf_counter()
                for _ in range(steps):
                    step(net, x, y)
                best[name] = min(best[name], (time.perf_counter() - start) / (steps * batch) * 1000)
        print(f"| {batch} | {best['airbench94']:.3f} | {best['ours']:.3f} | {best['ours'] / best['airbench94']:.2f}x |",
              flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
