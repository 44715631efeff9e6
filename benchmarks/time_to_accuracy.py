"""Wall time until test accuracy first reaches a target, for a config, over several seeds.

    python benchmarks/time_to_accuracy.py configs/fast-cpu-90s.yaml --seeds 0 1 2
    python benchmarks/time_to_accuracy.py configs/fast-cpu.yaml --seeds 0 --targets 0.7315 0.90
    python benchmarks/time_to_accuracy.py configs/cnn-base.yaml -- --trainer.max_epochs=3   # extra CLI args

Each seed runs `lightning-cifar fit -c CONFIG` in a fresh process, as users run it. After
every training epoch the test set is evaluated (lightning_cifar.timing.EpochTestAccuracy);
the wall clock starts when the process is launched (start-up counts) and leaves out the time
of these extra test evaluations, which a normal run does not do.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_seed(config: str, seed: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "epochs.jsonl"
        cmd = [
            sys.executable, "-m", "lightning_cifar", "fit", "-c", str(Path(config).resolve()),
            f"--data.data_dir={Path(args.data_dir).resolve()}", f"--seed_everything={seed}",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={tmp}",
            "--trainer.callbacks+=lightning_cifar.timing.EpochTestAccuracy",
            f"--trainer.callbacks.output={out}", f"--trainer.callbacks.start_time={time.time()}",
            *args.extra,
        ]
        launched = time.time()
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
        total = time.time() - launched
        if proc.returncode != 0 or not out.is_file():
            raise SystemExit(f"seed {seed} failed:\n{proc.stderr[-3000:]}")
        epochs = [json.loads(line) for line in out.read_text().splitlines()]
    return {"seed": seed, "epochs": epochs, "process_wall_s": total,
            "fit_wall_s": total - epochs[-1]["eval_s"]}


def first_reaching(epochs: list[dict], target: float) -> dict | None:
    return next((e for e in epochs if e["test_acc"] >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.7315, 0.90, 0.94])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "cifar10"))
    parser.add_argument("--json", help="also write all measurements to this file")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.extra = argv[split + 1:]  # more lightning-cifar arguments, after --

    print(f"config {args.config}, seeds {args.seeds}, load average before: {os.getloadavg()[0]:.2f}", flush=True)
    runs = []
    for seed in args.seeds:
        run = run_seed(args.config, seed, args)
        runs.append(run)
        curve = " ".join(f"{e['test_acc']:.4f}@{e['train_wall_s']:.0f}s" for e in run["epochs"])
        print(f"seed {seed}: fit {run['fit_wall_s']:.1f} s (without the per-epoch test passes); test acc per epoch: {curve}",
              flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")

    finals = [r["epochs"][-1]["test_acc"] for r in runs]
    fits = [r["fit_wall_s"] for r in runs]
    spread = lambda xs: f"{statistics.mean(xs):.4f} +- {statistics.stdev(xs):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"
    print(f"{'target':>8} {'seeds reaching':>15} {'epoch (mean)':>13} {'wall s (mean)':>14} {'wall s (min-max)':>17}")
    for target in args.targets:
        hits = [h for h in (first_reaching(r["epochs"], target) for r in runs) if h is not None]
        if hits:
            walls = [h["train_wall_s"] for h in hits]
            print(f"{target:>8.2%} {len(hits):>9}/{len(runs):<5} {statistics.mean(h['epoch'] for h in hits):>13.1f} "
                  f"{statistics.mean(walls):>14.1f} {min(walls):>8.1f}-{max(walls):<8.1f}")
        else:
            print(f"{target:>8.2%} {0:>9}/{len(runs):<5} {'-':>13} {'-':>14} {'-':>17}")
    print(f"\nfinal test accuracy: {spread(finals)} (mean +- std over {len(runs)} seeds); "
          f"fit wall time {statistics.mean(fits):.1f} s (min {min(fits):.1f}, max {max(fits):.1f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": args.config, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
