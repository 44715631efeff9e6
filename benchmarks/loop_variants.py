"""Seconds per epoch of one config under a few setting changes, each a fresh `lightning-cifar fit`, alternating.

    python benchmarks/loop_variants.py configs/speedrun-cpu-94.yaml \\
        --variant "pool before norm" model.backbone_kwargs.pool_position=first_conv \\
        --variant "batch 1024" data.batch_size=1024 \\
        --variant "both" model.backbone_kwargs.pool_position=first_conv data.batch_size=1024 --images 20000

The config as written is always measured too. Each variant trains the same number of images (``--images``,
rounded up to whole batches; the first 5 steps are warm-up and left out, as ``throughput.py`` does), so a
larger batch is timed over as many images, not as many steps. This measures time only: a change of recipe
needs its accuracy measured too (``speedrun_ablation.py``, ``time_to_accuracy.py``).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402  (one fresh-process runner for both benchmarks)
from speedrun_ablation import _set, parse_change  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WARMUP_STEPS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar=("NAME", "KEY=VALUE"),
                        help="a name, then the settings it changes")
    parser.add_argument("--images", type=int, default=20_000, help="training images per measurement")
    parser.add_argument("--reps", type=int, default=2, help="alternating repetitions")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "cifar10"))
    args = parser.parse_args()
    from lightning_cifar.data.datamodule import TRAIN_SIZE

    base = yaml.safe_load(Path(args.config).read_text())
    variants = {"as written": []}
    for name, *changes in args.variant:
        if not changes:
            raise SystemExit(f"variant {name!r} changes nothing: give KEY=VALUE settings after its name")
        variants[name] = [parse_change(c) for c in changes]
    print(f"config {args.config}, {args.images:,} images per measurement, load average before: "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for i, (name, changes) in enumerate(variants.items()):
            config = yaml.safe_load(yaml.safe_dump(base))
            for key, value in changes:
                _set(key, value)(config)
            paths[name] = Path(tmp) / f"variant{i}.yaml"
            paths[name].write_text(yaml.safe_dump(config))
        for rep in range(args.reps):
            for name, path in paths.items():
                batch = int(yaml.safe_load(path.read_text())["data"]["batch_size"])
                steps = WARMUP_STEPS + math.ceil(args.images / batch)
                run_args = argparse.Namespace(data_dir=args.data_dir, steps=steps, threads=None)
                result = throughput.run_training("ours", "", run_args, config=str(path))
                rates[name].append(result["images_per_s"])
                print(f"  rep {rep}: {name}: {result['images_per_s']:,.0f} img/s", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print(f"| variant | settings | img/s (median of {args.reps}) | s per 50,000-image epoch | against as written |")
    print("| --- | --- | ---: | ---: | ---: |")
    reference = statistics.median(rates["as written"])
    for name, changes in variants.items():
        rate = statistics.median(rates[name])
        settings = ", ".join(f"`{k}={v}`" for k, v in changes) or "–"
        print(f"| {name} | {settings} | {rate:,.0f} | {TRAIN_SIZE / rate:.1f} | {reference / rate:.2f}x time |")


if __name__ == "__main__":
    main()
