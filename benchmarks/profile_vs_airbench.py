"""Where a training step's time goes, ours against airbench94's, on the same images: torch.profiler per operator.

    python benchmarks/profile_vs_airbench.py --images 20480 --json benchmarks/speedrun/profile-vs-airbench.json

Each side runs in a process of its own, one after the other, training on ``--images`` images after a warm-up:
airbench94 through ``airbench_cpu.py``'s shim (``--airbench-precision``: by default bfloat16 where the CPU runs it
natively, as our default precision, else float32; its batch 1024, ``verbose=False``: no test passes) and
``lightning-cifar fit -c CONFIG`` (batch 500 in the 94 % config; ``--trainer.profiler=simple`` adds Lightning's
per-hook times; the profile leaves out its first 3 steps and the set-up before them). Prints each side's top
operators by their own CPU time, per 1,000 training images, and the ratio; ``--json`` keeps them. Time nothing
else while it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lightning_cifar.hardware import cpu_has_native_bf16

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

CHILD_AIRBENCH = r"""
import json, sys, time, torch
sys.path.insert(0, {here!r})
import airbench_cpu
airbench_cpu.run_on_cpu({precision!r})
import airbench
from torch.profiler import ProfilerActivity, profile
data_folder = airbench_cpu.airbench_data_folder({data!r})  # held: left when the process ends
data_folder.__enter__()
loader = airbench.CifarLoader("cifar10", train=True, batch_size=1024, aug={{"flip": True, "translate": 2}},
                              altflip=True)
epochs = {images} / (len(loader) * 1024)
options = airbench_cpu.train94_options({precision!r}, airbench)
# warm-up: oneDNN picks kernels on the first steps
airbench.train94(loader, epochs=3 / len(loader), verbose=False, **options)
loader.epoch = 0
torch.manual_seed(0)
with profile(activities=[ProfilerActivity.CPU]) as prof:
    start = time.perf_counter()
    airbench.train94(loader, epochs=epochs, verbose=False, **options)
    seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "images": round(epochs * len(loader)) * 1024,
                  "ops": [[e.key, e.self_cpu_time_total / 1e6, e.count] for e in prof.key_averages()]}}))
"""

def child(cmd: list[str], result: Path | None = None) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(HERE)})
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    lines = proc.stdout.strip().splitlines()
    # Lightning's SimpleProfiler table (logged, so on stderr), when there is one
    hooks = [line.expandtabs(2) for line in proc.stderr.splitlines() if line.startswith("|")]
    return {**json.loads(result.read_text() if result else lines[-1]), "hooks": hooks}


def top(side: dict, n: int) -> list[tuple[str, float, int]]:
    per_k = 1000 / side["images"]
    ops = sorted(side["ops"], key=lambda op: -op[1])[:n]
    return [(name, seconds * per_k, count) for name, seconds, count in ops]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "speedrun-cpu-94.yaml"))
    parser.add_argument("--batch", type=int, default=500, help="the config's batch size (for images per step)")
    parser.add_argument("--images", type=int, default=20480, help="training images each side is profiled on")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "cifar10"))
    parser.add_argument("--airbench-precision", choices=["bf16", "fp32", "autocast"],
                        default="bf16" if cpu_has_native_bf16() else "fp32",
                        help="airbench_cpu.py's precision (default: bf16 where the CPU runs it natively, else fp32)")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    data = str(Path(args.data_dir).resolve())
    skip = 3
    code = CHILD_AIRBENCH.format(here=str(HERE), data=data, images=args.images, precision=args.airbench_precision)
    sides = {"airbench94": child([sys.executable, "-c", code])}
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "profile.json"
        steps = max(1, args.images // args.batch)
        sides["ours"] = child([
            sys.executable, "-m", "lightning_cifar", "fit", "-c", str(Path(args.config).resolve()),
            f"--data.data_dir={data}", f"--trainer.max_steps={skip + steps}", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--trainer.profiler=simple", f"--trainer.default_root_dir={tmp}",
            "--trainer.callbacks+=profile_steps.ProfileSteps", f"--trainer.callbacks.output={result}",
            f"--trainer.callbacks.skip={skip}"], result)
    for name, side in sides.items():
        label = f"{name} ({args.airbench_precision})" if name == "airbench94" else name
        print(f"\n{label}: {side['images']} images in {side['seconds']:.1f} s"
              f" ({side['seconds'] / side['images'] * 1000:.2f} s per 1,000 images, profiler on)")
        print("| operator | own CPU s per 1,000 images | calls |\n| --- | ---: | ---: |")
        for op, seconds, count in top(side, args.top):
            print(f"| `{op}` | {seconds:.3f} | {count} |")
        if side["hooks"]:
            print("\nLightning's hooks (SimpleProfiler):\n" + "\n".join(side["hooks"][:25]))
    ratio = (sides["ours"]["seconds"] / sides["ours"]["images"]) / (
        sides["airbench94"]["seconds"] / sides["airbench94"]["images"])
    print(f"\nours / airbench94, seconds per image (profiler on both): {ratio:.2f}x;"
          f" load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"sides": sides, "ratio": ratio, "measured": time.time(),
                                               "airbench_precision": args.airbench_precision}))


if __name__ == "__main__":
    main()
