"""Wall time until test accuracy first reaches a target, for a config, over several seeds.

    python benchmarks/time_to_accuracy.py configs/fast-cpu-90s.yaml --seeds 0 1 2
    python benchmarks/time_to_accuracy.py configs/fast-cpu.yaml --seeds 0 --targets 0.7315 0.90
    python benchmarks/time_to_accuracy.py configs/cnn-base.yaml -- --trainer.max_epochs=3   # extra CLI args
    python benchmarks/time_to_accuracy.py configs/speedrun-cpu-94.yaml --json out.json --resume   # the seeds out.json lacks

Each seed runs `lightning-cifar fit -c CONFIG` in a fresh process, as users run it. After
every training epoch the test set is evaluated (lightning_cifar.tools.timing.EpochTestAccuracy);
the wall clock starts when the process is launched (start-up counts) and leaves out the time
of these extra test evaluations, which a normal run does not do.

Machines differ in speed, so next to the wall times it reports what does not depend on the
machine: the speed of the plain tutorial training loop (benchmarks/throughput.py's, `cnn_base`)
measured in the same run, before and after the seeds; the training FLOPs spent until each target
(forward + backward per image, counted by torch, times the images trained on); and the share of
the machine's measured peak (the better of a large matmul and a 3x3 convolution, in the run's
precision) that the training reached.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402  (the tutorial loop, the peaks and the FLOP count, shared with that benchmark)


def fit_command(config: str, seed: int, args: argparse.Namespace, tmp: str) -> list[str]:
    """The ``lightning-cifar fit`` a seed runs (``tmp``: its run folder), before the per-epoch test callback."""
    return [
        sys.executable, "-m", "lightning_cifar", "fit", "-c", str(Path(config).resolve()),
        f"--data.data_dir={Path(args.data_dir).resolve()}", f"--seed_everything={seed}",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp}",
    ]


# A kept run folder: the last and the best checkpoint (16 MB each for the 94 % network, with Muon's and SGD's
# state) and the events; the space asked of --keep-runs' disk before anything trains.
RUN_FOLDER_BYTES = 64 * 2**20
KEEP_RUNS_HELP = ("copy each seed's run folder (its last checkpoint, config and TensorBoard events) into DIR, as"
                  " CONFIG-seedN, so that its weights can be evaluated again later")


def run_quietly(cmd: list[str], cwd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def run_seed(config: str, seed: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "epochs.jsonl"
        cmd = [
            *fit_command(config, seed, args, tmp),
            "--trainer.callbacks+=lightning_cifar.tools.timing.EpochTestAccuracy",
            f"--trainer.callbacks.output={out}", f"--trainer.callbacks.from_epoch={args.from_epoch}",
            f"--trainer.callbacks.start_time={time.time()}",
            *args.extra,
        ]
        launched = time.time()
        proc = run_quietly(cmd, tmp)
        total = time.time() - launched
        if proc.returncode != 0 or not out.is_file():
            raise SystemExit(f"seed {seed} failed:\n{proc.stderr[-3000:]}")
        epochs = [json.loads(line) for line in out.read_text().splitlines()]
        run_dir = next(Path(tmp).glob("lightning_logs/version_*"))
        resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
        val = val_accuracies(run_dir)
        keep = getattr(args, "keep_runs", None)
        kept = keep_run(run_dir, Path(keep), f"{Path(config).stem}-seed{seed}") if keep else None
    return {"seed": seed, "epochs": epochs, "process_wall_s": total, "fit_wall_s": total - epochs[-1]["eval_s"],
            "config": resolved, "val_acc": val[-1] if val else None,
            "kept_at": str(kept) if kept else None}


def keep_run(run_dir: Path, into: Path, name: str) -> Optional[Path]:
    """A copy of a finished run's folder (its checkpoints, config and TensorBoard events) under ``into``: a later
    question about the trained weights (another test-time augmentation, a calibration) then needs no retraining.
    A name already taken gets a number, so a second invocation never overwrites the first one's weights. A copy
    that fails (a full disk) is reported and skipped: the hour's measurement matters more than its weights."""
    dest, n = into / name, 1
    while dest.exists():
        n += 1
        dest = into / f"{name}-{n}"
    try:
        shutil.copytree(run_dir, dest)
    except OSError as exc:
        print(f"--keep-runs: could not copy the run folder to {dest} ({exc}); the measurement is kept",
              file=sys.stderr, flush=True)
        return None
    return dest


def check_keep_runs(path: Optional[str]) -> None:
    """Refuse an unusable ``--keep-runs`` (not a folder, not writable, a full disk) before the first seed trains,
    not after it."""
    from lightning_cifar.errors import LightningCifarError
    from lightning_cifar.files import ensure_writable

    if path is not None:
        try:
            ensure_writable(Path(path), RUN_FOLDER_BYTES, "--keep-runs")
        except LightningCifarError as exc:
            raise SystemExit(f"--keep-runs {path}: {exc}") from None


def val_accuracies(run_dir: Path) -> list[float]:
    """The run's ``val/acc`` after each validation, read back from its TensorBoard event files (none without a
    validation split): the score a recipe is tuned on, where the test set only reports."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [round(e.value, 5) for e in events.Scalars("val/acc")] if "val/acc" in events.Tags()["scalars"] else []


def recipe(config: dict) -> dict:
    """What a seed trained: its resolved trainer, model and data settings, without what differs from seed to
    seed by design (the seed, its run folder, the benchmark's own callback with its per-seed start time and
    output file) and the data's path. The rest (checkpointing, for one) is filled in at run time, so a run's
    saved config and ``--print_config`` differ there."""
    config = copy.deepcopy({key: config.get(key) or {} for key in ("trainer", "model", "data")})
    for key in ("callbacks", "default_root_dir"):
        config["trainer"].pop(key, None)
    config["data"].pop("data_dir", None)
    return config


def finished_seeds(args: argparse.Namespace) -> tuple[list[dict], list[float]]:
    """``--resume``: the seeds ``--json`` already holds and the tutorial-loop rates measured in that earlier run,
    once this invocation's settings are checked to resolve to the same recipe (a table must not mix two recipes;
    resolving asks ``lightning-cifar fit --print_config``, a few seconds)."""
    path = Path(args.json)
    if not path.is_file():
        return [], []
    saved = json.loads(path.read_text())
    runs = saved["runs"]
    if saved.get("config") != args.config:
        raise SystemExit(f"--resume: {path} holds seeds of {saved.get('config')}, not of {args.config}")
    done = {r["seed"] for r in runs}
    if done - set(args.seeds):  # rewriting the file without them would lose finished runs
        raise SystemExit(f"--resume: {path} also holds seeds {sorted(done - set(args.seeds))}; add them to --seeds"
                         " (they are not rerun)")
    if done and set(args.seeds) - done:
        with tempfile.TemporaryDirectory() as tmp:
            resolved = throughput.resolved_settings([*fit_command(args.config, 0, args, tmp), *args.extra], tmp)
        differ = differing_settings(recipe(resolved), recipe(runs[0]["config"]))
        tested_from = [c["init_args"].get("from_epoch") for c in runs[0]["config"]["trainer"].get("callbacks") or []
                       if c.get("class_path", "").endswith("EpochTestAccuracy")]
        if tested_from and tested_from[0] != args.from_epoch:
            differ.append(f"--from-epoch (theirs: {tested_from[0]})")
        if differ:
            raise SystemExit(f"--resume: these settings differ from the seeds in {path}: {', '.join(differ)};"
                             " pass the earlier run's arguments after --, or write to another --json file")
    return runs, [r for r in saved.get("tutorial_img_s") or [] if r is not None]


def differing_settings(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted names of the settings whose values differ between two resolved configs."""
    names = []
    for key in sorted(set(a) | set(b), key=str):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            names += differing_settings(x, y, f"{prefix}{key}.")
        elif x != y:
            names.append(f"{prefix}{key}")
    return names


def reference_rate(args: argparse.Namespace) -> float | None:
    """img/s of the plain tutorial training loop (cnn_base, fp32, DataLoader workers) on this machine, now."""
    if not args.reference_steps:
        return None
    ns = argparse.Namespace(data_dir=str(Path(args.data_dir).resolve()), batch_size=256, steps=args.reference_steps,
                            workers=2, threads=None)
    return throughput.run_training("tutorial", "cnn_base", ns)["images_per_s"]


def first_reaching(epochs: list[dict], target: float) -> dict | None:
    return next((e for e in epochs if e["test_acc"] >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.7315, 0.90, 0.94])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "cifar10"))
    parser.add_argument("--json", help="also write all measurements to this file")
    parser.add_argument("--from-epoch", type=int, default=1,
                        help="test only after this epoch and later ones (a long run's early epochs reach no target)")
    parser.add_argument("--reference-steps", type=int, default=40,
                        help="steps of the tutorial loop measured before and after the seeds (0: skip)")
    parser.add_argument("--keep-runs", metavar="DIR", help=KEEP_RUNS_HELP)
    parser.add_argument("--resume", action="store_true",
                        help="keep the seeds the --json file already holds (checked to be of the same settings) and"
                             " run only the others; the table covers them all")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.extra = argv[split + 1:]  # more lightning-cifar arguments, after --
    if args.resume and not args.json:
        parser.error("--resume needs --json FILE: the file the finished seeds were written to")
    check_keep_runs(args.keep_runs)

    print(f"config {args.config}, seeds {args.seeds}, load average before: {os.getloadavg()[0]:.2f}", flush=True)
    runs, earlier_rates = finished_seeds(args) if args.resume else ([], [])
    for run in runs:
        print(f"seed {run['seed']}: kept from {args.json}, fit {run['fit_wall_s']:.1f} s", flush=True)
    rate_before = reference_rate(args)
    done = {r["seed"] for r in runs}
    for seed in [s for s in args.seeds if s not in done]:
        run = run_seed(args.config, seed, args)
        runs.append(run)
        curve = " ".join(f"{e['test_acc']:.4f}@{e['train_wall_s']:.0f}s" for e in run["epochs"])
        print(f"seed {seed}: fit {run['fit_wall_s']:.1f} s (without the per-epoch test passes); test acc per epoch: {curve}",
              flush=True)
        if args.json:  # seeds of long configs take half an hour each: keep each one as it finishes
            save(args, runs, [*earlier_rates, rate_before, None])
    rate_after = reference_rate(args)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if rate_before is not None:
        print(f"the tutorial training loop on this machine (cnn_base, fp32, {args.reference_steps} steps):"
              f" {rate_before:,.0f} img/s before the seeds, {rate_after:,.0f} after"
              + (f" (in the earlier run the kept seeds come from: {', '.join(f'{r:,.0f}' for r in earlier_rates)})"
                 if earlier_rates else ""))
    config = runs[0]["config"]
    flops_per_image = throughput.model_flops_per_image(config["model"])
    dtype = torch.bfloat16 if "bf16" in str(config["trainer"].get("precision")) else torch.float32
    peak = max(throughput.matmul_peak(dtype), throughput.conv_peak(dtype)) * 1e9
    print(f"training: {flops_per_image / 1e6:.1f} MFLOP per image (forward + backward); this machine's peak in"
          f" {dtype}: {peak / 1e9:.0f} GFLOP/s\n")

    finals = [r["epochs"][-1]["test_acc"] for r in runs]
    fits = [r["fit_wall_s"] for r in runs]
    spread = lambda xs: f"{statistics.mean(xs):.4f} +- {statistics.stdev(xs):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"
    print(f"{'target':>8} {'seeds reaching':>15} {'epoch (mean)':>13} {'wall s (mean)':>14} {'wall s (min-max)':>17}"
          f" {'PFLOP':>7} {'% of peak':>10}")
    for target in args.targets:
        hits = [h for h in (first_reaching(r["epochs"], target) for r in runs) if h is not None]
        if hits:
            walls = [h["train_wall_s"] for h in hits]
            spent = [h["train_images"] * flops_per_image for h in hits]
            share = statistics.mean(f / w / peak for f, w in zip(spent, walls))
            print(f"{target:>8.2%} {len(hits):>9}/{len(runs):<5} {statistics.mean(h['epoch'] for h in hits):>13.1f} "
                  f"{statistics.mean(walls):>14.1f} {min(walls):>8.1f}-{max(walls):<8.1f}"
                  f" {statistics.mean(spent) / 1e15:>7.3f} {100 * share:>9.1f}%")
        else:
            print(f"{target:>8.2%} {0:>9}/{len(runs):<5} {'-':>13} {'-':>14} {'-':>17} {'-':>7} {'-':>10}")
    # eval_s accumulates over the epochs: the last pass alone is what one test of the trained model costs.
    last_eval = [r["epochs"][-1]["eval_s"] - (r["epochs"][-2]["eval_s"] if len(r["epochs"]) > 1 else 0.0) for r in runs]
    print(f"\nfinal test accuracy: {spread(finals)} (mean +- std over {len(runs)} seeds); "
          f"fit wall time {statistics.mean(fits):.1f} s (min {min(fits):.1f}, max {max(fits):.1f}); "
          f"one test pass of the trained model (with the config's test-time augmentation): "
          f"{statistics.mean(last_eval):.1f} s, not in the wall times")
    if args.json:
        save(args, runs, [*earlier_rates, rate_before, rate_after], train_flops_per_image=flops_per_image,
             peak_flops=peak)


def save(args: argparse.Namespace, runs: list[dict], tutorial_img_s: list, **totals: float) -> None:
    """Write the measurements so far to ``--json`` (whole: a reader never sees half a file)."""
    from lightning_cifar.files import atomic_write_json

    atomic_write_json(Path(args.json), {"config": args.config, "runs": runs, "tutorial_img_s": tutorial_img_s,
                                        **totals})


if __name__ == "__main__":
    main()
