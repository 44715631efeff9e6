"""Training throughput: our pipeline against the way most tutorials train on CIFAR-10.

    python benchmarks/throughput.py --data-dir ../shared/cifar10
    python benchmarks/throughput.py --data-dir ../shared/cifar10 --backbones cnn_base --reps 3
    python benchmarks/throughput.py --backbones "" --compile "" --configs configs/speedrun-cpu-94.yaml --steps 20

ours      `lightning-cifar fit` exactly as users run it: uint8 tensors in memory, batched
          augmentation on the device, bf16 autocast where supported, channels_last.
tutorial  torchvision `transforms.Compose` per image in a DataLoader with workers, fp32,
          NCHW, the default Lightning loop; same backbone, optimizer and batch size.
--configs `lightning-cifar fit -c CONFIG` with the config's whole recipe (network, optimizer,
          batch size, augmentation, precision) against the same with `--model.compile=true`:
          torch.compile's speed depends on the network, so each recipe is measured again.

Every training measurement runs in a fresh process; the two pipelines alternate so that
a change in machine load hits both. The script prints the load average before and after:
on a shared machine, numbers taken under load are not comparable with idle ones.
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

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
PRESETS = ["cnn_base", "cnn_wide", "cnn_deep", "cnn_seed", "cnn_fast", "mlp_seed", "mlp"]


# -- the tutorial pipeline -----------------------------------------------------------


def tutorial_worker(args: argparse.Namespace) -> None:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from lightning_cifar import Classifier
    from lightning_cifar.tools.timing import Throughput
    from lightning_cifar.training.input_norm import CIFAR10_MEAN, CIFAR10_STD

    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD),
    ])
    train = datasets.CIFAR10(args.data_dir, train=True, transform=transform, download=False)
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                        persistent_workers=True, drop_last=True)
    # The tutorial normalises in its transforms, so the model must not standardise a second time.
    model = Classifier(args.backbone, channels_last=False, normalize=False)
    trainer = pl.Trainer(
        accelerator="auto", precision="32-true", max_steps=args.steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[Throughput(output=args.output)],
    )
    trainer.fit(model, train_dataloaders=loader)


# -- measurements in this process ----------------------------------------------------------


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """Best GFLOP/s of an n^3 matrix multiply."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def conv_peak(dtype: torch.dtype, reps: int = 5) -> float:
    """Best GFLOP/s of a large 3x3 convolution (oneDNN), channels_last.

    On some x86 CPUs the BLAS behind torch.matmul runs far below what oneDNN's
    convolutions reach, so a matmul alone understates the attainable peak.
    """
    import torch.nn.functional as F

    x = torch.randn(64, 256, 16, 16, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(256, 256, 3, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
    F.conv2d(x, w, padding=1)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        F.conv2d(x, w, padding=1)
        best = min(best, time.perf_counter() - t)
    return 2 * 64 * 256 * 256 * 9 * 16 * 16 / best / 1e9


def training_flops_per_image(backbone: str, kwargs: dict | None = None) -> float:
    """Forward + backward FLOPs for one image, counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    from lightning_cifar import registry

    net = registry.create_backbone(backbone, **(kwargs or {}))
    x = torch.randn(8, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        net(x).sum().backward()
    return counter.get_total_flops() / 8


def data_pipeline_rates(data_dir: str, batch_size: int, batches: int, workers: int, reps: int) -> dict:
    """Images/s of the input pipelines alone (batches ready for the model, on the CPU)."""
    from types import SimpleNamespace

    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from lightning_cifar import CIFAR10DataModule
    from lightning_cifar.training.input_norm import CIFAR10_MEAN, CIFAR10_STD

    dm = CIFAR10DataModule(data_dir, batch_size=batch_size, download=False)
    dm.setup("fit")
    dm.trainer = SimpleNamespace(training=True, current_epoch=0)
    tutorial = DataLoader(
        datasets.CIFAR10(data_dir, train=True, download=False, transform=transforms.Compose([
            transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
            transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)])),
        batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=True, drop_last=True,
    )

    def ours() -> float:
        t, n = time.perf_counter(), 0
        for i, batch in enumerate(dm.train_dataloader()):
            if i == batches:
                break
            x, y = dm.on_after_batch_transfer(batch, 0)
            n += len(y)
        return n / (time.perf_counter() - t)

    def theirs() -> float:
        it = iter(tutorial)
        next(it)  # workers started
        t, n = time.perf_counter(), 0
        for _ in range(batches):
            x, y = next(it)
            n += len(y)
        return n / (time.perf_counter() - t)

    rates = {"ours": [], "tutorial": []}
    for _ in range(reps):
        rates["ours"].append(ours())
        rates["tutorial"].append(theirs())
    return rates


def run_training(pipeline: str, backbone: str, args: argparse.Namespace, config: str | None = None) -> dict:
    """One measurement in a fresh process; ``config``: train that config's recipe (its own batch size)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "throughput.jsonl"
        if pipeline in ("ours", "ours+compile", "ours-fixed-threads"):
            recipe = (["-c", str(Path(config).resolve())] if config
                      else [f"--model.backbone={backbone}", f"--data.batch_size={args.batch_size}"])
            cmd = [
                sys.executable, "-m", "lightning_cifar", "fit", *recipe, f"--data.data_dir={args.data_dir}",
                f"--trainer.max_steps={args.steps}", "--trainer.limit_val_batches=0", "--trainer.logger=false",
                "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp}",
                "--trainer.callbacks+=lightning_cifar.tools.timing.Throughput", f"--trainer.callbacks.output={out}",
                f"--model.compile={pipeline == 'ours+compile'}",
                # Version 0.3's default follows the load (lightning_cifar/tools/threads.py); this keeps torch's count.
                f"--threads.enabled={pipeline != 'ours-fixed-threads'}",
            ]
        else:
            cmd = [sys.executable, __file__, "--worker", "tutorial", "--backbone", backbone,
                   "--data-dir", args.data_dir, "--batch-size", str(args.batch_size), "--steps", str(args.steps),
                   "--workers", str(args.workers), "--output", str(out)]
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        launched = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, env=env)
        if proc.returncode != 0 or not out.is_file():
            raise SystemExit(f"{pipeline} {config or backbone} failed:\n{proc.stderr[-3000:]}")
        # The whole process too: compilation happens in the warm-up steps the img/s leaves out.
        return {**json.loads(out.read_text().splitlines()[-1]), "process_s": round(time.perf_counter() - launched, 2)}


def resolved_settings(fit_cmd: list[str], cwd: str | None = None) -> dict:
    """The settings a ``lightning-cifar fit`` command line trains with, as the CLI resolves them (defaults
    included): the command run with ``--print_config``, a few seconds. Exits naming the error if they do not."""
    proc = subprocess.run([*fit_cmd, "--print_config"], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        raise SystemExit(f"these settings do not resolve: {' '.join(fit_cmd[4:])}\n{proc.stderr[-3000:]}")
    return yaml.safe_load(proc.stdout)


def model_flops_per_image(model: dict) -> float:
    """``training_flops_per_image`` of the network a resolved ``model`` section builds."""
    return training_flops_per_image(model["backbone"], model.get("backbone_kwargs") or {})


def measure_configs(args: argparse.Namespace, peaks: dict) -> list[dict]:
    """Each config's recipe in eager mode against torch.compile, alternating."""
    print(f"\n{'config':<22} {'eager img/s':>11} {'GFLOP/s':>8} {'% peak':>7} {'compiled':>9} {'ratio':>6} "
          f"{'eager process s':>16} {'compiled':>9}  (median of {args.reps}; {args.steps} steps, 5 warm-up)")
    results = []
    for config in args.configs.split(","):
        fit = [sys.executable, "-m", "lightning_cifar", "fit", "-c", str(Path(config).resolve())]
        flops = model_flops_per_image(resolved_settings(fit)["model"])
        runs: dict[str, list[dict]] = {"ours": [], "ours+compile": []}
        for _ in range(args.reps):
            for pipeline in runs:
                runs[pipeline].append(run_training(pipeline, "", args, config=config))
        med = {p: statistics.median(r["images_per_s"] for r in rs) for p, rs in runs.items()}
        secs = {p: statistics.median(r["process_s"] for r in rs) for p, rs in runs.items()}
        gflops = med["ours"] * flops / 1e9
        pct = 100 * gflops / peaks.get(runs["ours"][0]["precision"], peaks["32-true"])
        print(f"{Path(config).name:<22} {med['ours']:>11,.0f} {gflops:>8.1f} {pct:>6.1f}% {med['ours+compile']:>9,.0f} "
              f"{med['ours+compile'] / med['ours']:>5.2f}x {secs['ours']:>16.1f} {secs['ours+compile']:>9.1f}", flush=True)
        results.append({"config": config, "train_flops_per_image": flops, **{f"{p}_runs": r for p, r in runs.items()}})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "cifar10"))
    parser.add_argument("--backbones", default=",".join(PRESETS))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40, help="training steps per measurement (5 are warm-up)")
    parser.add_argument("--reps", type=int, default=2, help="alternating repetitions per backbone")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the tutorial pipeline")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the training processes (default: torch's)")
    parser.add_argument("--compile", default="cnn_base",
                        help="backbones also measured with --model.compile=true (comma-separated; '' for none)")
    parser.add_argument("--configs", default="",
                        help="configs whose whole recipe is measured eager and with torch.compile (comma-separated)")
    parser.add_argument("--fixed-threads-too", action="store_true",
                        help="also measure ours with torch's fixed thread count (--threads.enabled=false), alternating")
    parser.add_argument("--contention", action="store_true",
                        help="keep one core busy with another process during the measurements")
    parser.add_argument("--worker", choices=["tutorial"], help=argparse.SUPPRESS)
    parser.add_argument("--backbone", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "tutorial":
        return tutorial_worker(args)

    from lightning_cifar.cli.precision import default_precision
    from lightning_cifar.study.machine import cpu_name

    print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, our precision: {default_precision()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    hog = None
    if args.contention:
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        print("contention: another process keeps one core busy during every measurement")
    try:
        matmul = {"32-true": matmul_peak(torch.float32), "bf16-mixed": matmul_peak(torch.bfloat16)}
        conv = {"32-true": conv_peak(torch.float32), "bf16-mixed": conv_peak(torch.bfloat16)}
        peaks = {k: max(matmul[k], conv[k]) for k in matmul}
        print(f"matmul peak (2048^3): fp32 {matmul['32-true']:.0f} GFLOP/s, bf16 {matmul['bf16-mixed']:.0f} GFLOP/s; "
              f"3x3 conv peak (64x256x16x16): fp32 {conv['32-true']:.0f}, bf16 {conv['bf16-mixed']:.0f}; "
              "% of peak below uses the higher of the two, same dtype")

        rates = data_pipeline_rates(args.data_dir, args.batch_size, batches=40, workers=args.workers, reps=args.reps)
        best = {k: max(v) for k, v in rates.items()}
        print(f"\ndata pipeline alone (best of {args.reps}): ours {best['ours']:,.0f} img/s, "
              f"tutorial {best['tutorial']:,.0f} img/s, ratio {best['ours'] / best['tutorial']:.1f}x")

        header = (f"\n{'backbone':<10} {'ours img/s':>11} {'tutorial':>9} {'ratio':>6} "
                  f"{'ours GFLOP/s':>13} {'% peak':>7} {'tut GFLOP/s':>12} {'% peak':>7}  (median of {args.reps})")
        backbones = [b for b in args.backbones.split(",") if b]
        if backbones:
            print(header)
        results = []
        for backbone in backbones:
            flops = training_flops_per_image(backbone)
            pipelines = ["ours", "tutorial"] + (["ours+compile"] if backbone in args.compile.split(",") else [])
            pipelines += ["ours-fixed-threads"] if args.fixed_threads_too else []
            runs: dict[str, list[dict]] = {p: [] for p in pipelines}
            for _ in range(args.reps):
                for pipeline in pipelines:
                    runs[pipeline].append(run_training(pipeline, backbone, args))
            med = {p: statistics.median(r["images_per_s"] for r in rs) for p, rs in runs.items()}
            prec = {p: rs[0]["precision"] for p, rs in runs.items()}
            gf = {p: med[p] * flops / 1e9 for p in med}
            pct = {p: 100 * gf[p] / peaks.get(prec[p], peaks["32-true"]) for p in med}
            more = f"   with torch.compile: {med['ours+compile']:,.0f} img/s" if "ours+compile" in med else ""
            if "ours-fixed-threads" in med:
                more += (f"   fixed threads: {med['ours-fixed-threads']:,.0f} img/s"
                             f" (ours/fixed {med['ours'] / med['ours-fixed-threads']:.2f}x)")
            print(f"{backbone:<10} {med['ours']:>11,.0f} {med['tutorial']:>9,.0f} {med['ours'] / med['tutorial']:>5.1f}x "
                  f"{gf['ours']:>13.1f} {pct['ours']:>6.1f}% {gf['tutorial']:>12.1f} {pct['tutorial']:>6.1f}%{more}",
                  flush=True)
            results.append({"backbone": backbone, "train_flops_per_image": flops, **{f"{p}_runs": r for p, r in runs.items()}})
        configs = measure_configs(args, peaks) if args.configs else []
    finally:
        if hog is not None:
            hog.kill()
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    print(json.dumps({"matmul_gflops": matmul, "conv_gflops": conv, "data_pipeline": rates, "training": results,
                      "configs": configs}),
          file=sys.stderr)


if __name__ == "__main__":
    main()
