"""The networks alone: forward + backward of our 94 % config's network and airbench94's, in one process.

    python benchmarks/network_cost_vs_airbench.py
    python benchmarks/network_cost_vs_airbench.py --config configs/speedrun-cpu-94.yaml --batches 500 1024
    python benchmarks/network_cost_vs_airbench.py --batches 500 --images 500 --reps 1 --precision fp32 autocast

``profile_vs_airbench.py`` compares whole training steps with the profiler on, which adds a cost per operator
call (ours makes twice the calls per image at batch 500); ``vs_airbench.py`` compares whole runs. This isolates
the networks: the same random batch through each, both on float32 weights under bfloat16 autocast
(``autocast``: airbench's ``autocast`` mode in ``airbench_cpu.py``, as ours trains where the CPU has bfloat16)
or without it (``fp32``), its loss's backward pass, no optimizer, no data pipeline, no Lightning. The two
alternate, best of ``--reps``. The gap between this ratio and the whole runs' is the rest: the training loop,
the optimizer, airbench's pure bfloat16 weights and its frozen whitening bias. Time nothing else while it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import yaml

from lightning_cifar.hardware import cpu_has_native_bf16

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


def step(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "autocast"):
        out = net(x)
    torch.nn.functional.cross_entropy(out.float(), y).backward()
    net.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(HERE.parent / "configs" / "speedrun-cpu-94.yaml"))
    parser.add_argument("--batches", type=int, nargs="+", default=[500, 1024])
    parser.add_argument("--images", type=int, default=6000, help="images per timing")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--precision", nargs="+", choices=["autocast", "fp32"], default=["autocast"],
                        help="bfloat16 autocast (emulated, and slow, on a CPU without AVX-512 BF16 or AMX) or float32")
    args = parser.parse_args()
    try:
        import airbench
    except ImportError:
        raise SystemExit("needs the airbench package: pip install 'lightning-cifar[bench]'") from None
    airbench_cpu.run_on_cpu("autocast")  # its .half() keeps float32 weights; autocast as ours
    nets = {"airbench94": airbench.make_net94().train(), "ours": ours(args.config).train()}
    native = cpu_has_native_bf16()
    print(f"load average before: {os.getloadavg()[0]:.2f}, {torch.get_num_threads()} threads,"
          f" native bfloat16 (oneDNN): {native}")
    print("| precision | batch | airbench94 s / 1,000 images | ours | ours / airbench94 |\n"
          "| --- | ---: | ---: | ---: | ---: |")
    best: dict[tuple[str, int, str], float] = {}
    for batch in args.batches:
        x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (batch,))
        steps = max(3, args.images // batch)
        for precision in args.precision:
            for _ in range(args.reps):
                for name, net in nets.items():
                    for _ in range(2):  # oneDNN picks its kernels on the first calls of a shape
                        step(net, x, y, precision)
                    start = time.perf_counter()
                    for _ in range(steps):
                        step(net, x, y, precision)
                    seconds = (time.perf_counter() - start) / (steps * batch) * 1000
                    key = (precision, batch, name)
                    best[key] = min(best.get(key, float("inf")), seconds)
            theirs, mine = best[precision, batch, "airbench94"], best[precision, batch, "ours"]
            print(f"| {precision} | {batch} | {theirs:.3f} | {mine:.3f} | {mine / theirs:.2f}x |", flush=True)
    if len(args.precision) > 1:
        first = args.precision[0]
        for precision in args.precision[1:]:
            for batch in args.batches:
                ratios = ", ".join(f"{name} {best[precision, batch, name] / best[first, batch, name]:.2f}x"
                                   for name in nets)
                print(f"{precision} / {first}, batch {batch}: {ratios}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
