"""``lightning-cifar study --dry-run``: the plan, each run's size, and a time estimate from a short probe."""

from __future__ import annotations

import re
import time
from collections import Counter
from statistics import median
from typing import Any, Optional

import torch

from lightning_cifar.models.measure import IMAGE_SHAPE
from lightning_cifar.study.plan import Run
from lightning_cifar.study.runner import describe_network
from lightning_cifar.tools.threads import BUSY_CORE_FRACTION, others_busy_cores, own_cores, sample
from lightning_cifar.training.classifier import Classifier

TRAIN_IMAGES = 45_000  # 50,000 minus the default 5,000 held out for validation
# Finished configurations whose recorded seconds calibrate the probe: a probe times bare steps on random input, and a
# real run also loads and augments batches, validates, scores the training subset and runs Lightning's hooks (on
# quick-cpu.yaml's 52 new runs of version 2.1, the bare steps alone said 1.7 hours; calibrated, 4.2 for 46 of them).
CALIBRATION_CONFIGS = 4


def training_device(config: Any) -> torch.device:
    """The device a run with this parsed configuration trains on (the first one)."""
    accelerator = str(config.trainer.accelerator)
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def probe_images_per_s(run: Run, config: Any, steps: int = 3) -> float:
    """Training images/s of the run's network on random input, with the run's batch size and precision,
    on the device it will train on (``config``: its configuration as fit's parser completed it)."""
    device = training_device(config)
    model = Classifier(**{k: v for k, v in config.model.as_dict().items() if k != "num_classes"}).to(device)
    batch = int(config.data.batch_size)
    precision = str(config.trainer.precision)
    x, y = torch.rand(batch, *IMAGE_SHAPE, device=device), torch.randint(0, 10, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    autocast = torch.autocast(device.type, dtype=dtype, enabled=precision.startswith(("bf16", "16")))

    def step() -> None:
        with autocast:
            loss = model.loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up: first-call allocations and kernel choices
    fastest = float("inf")
    for _ in range(steps):
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        fastest = min(fastest, time.perf_counter() - started)  # the step least slowed by anything else running
    return batch / fastest


def estimate_seconds(config: Any, images_per_s: float) -> float:
    """Training, plus validation each epoch, the clean training subset and one test pass (forward only: ~1/3 of a step)."""
    epochs, tta = int(config.trainer.max_epochs), 2 if config.model.tta else 1
    return epochs * TRAIN_IMAGES / images_per_s + tta * (epochs * 10_000 + 10_000) / (3 * images_per_s)


def recorded_threads(result: dict[str, Any]) -> Optional[int]:
    """The thread count a finished run trained with (results before 0.3 say it only in their device text)."""
    if result.get("threads") is not None:
        return int(result["threads"])
    found = re.search(r", (\d+) threads?$", str(result.get("device", "")))
    return int(found.group(1)) if found else None


def calibration(runs: list[Run], configs: dict[str, Any], finished: dict[str, dict[str, Any]], threads: int,
                probes: dict[str, float]) -> Optional[tuple[float, int]]:
    """How many times the probe's estimate the finished runs really took (the median over up to
    :data:`CALIBRATION_CONFIGS` configurations with the most finished runs at this thread count), and how many runs
    that rests on; ``None`` without such runs."""
    same = [r for r in runs if r.run_id in finished and recorded_threads(finished[r.run_id]) == threads
            and str(training_device(configs[r.run_id])) == "cpu"]
    counts = Counter(r.config_key for r in same)
    ratios, used = [], 0
    for key, n in counts.most_common(CALIBRATION_CONFIGS):
        members = [r for r in same if r.config_key == key]
        if key not in probes:
            probes[key] = probe_images_per_s(members[0], configs[members[0].run_id])
        estimate = estimate_seconds(configs[members[0].run_id], probes[key])
        ratios.append(median(finished[r.run_id]["train_time_s"] for r in members) / estimate)
        used += n
    return (median(ratios), used) if ratios else None


def dry_run(runs: list[Run], configs: dict[str, Any], pending: set[str], later: set[str], threads: int,
            finished: dict[str, dict[str, Any]]) -> None:
    """Print every run of the plan with its size and estimated seconds, probing with the ``threads`` threads the
    runs will train with and calibrating the probe by the seconds finished runs took. ``pending``: the tunings not
    finished; ``later``: the ids of runs whose settings wait for them (planned with the first candidate);
    ``finished``: the results of runs already done (by run id), left out of the estimate."""
    done = set(finished)
    cores = own_cores()
    before = sample(cores)  # other processes' load while the probes run: it slows them
    probes: dict[str, float] = {}
    total = 0.0
    print(f"{'run':<34} {'role':<11} {'points':<40} {'params':>10} {'FLOPs/img':>10} {'img/s':>7} {'est. s':>7}")
    devices = set()
    restore = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        calibrated = calibration(runs, configs, finished, threads, probes)
        factor = calibrated[0] if calibrated else 1.0
        for run in runs:
            config = configs[run.run_id]
            network = describe_network(run)
            where = "; ".join(p.label for p in run.points)
            if run.run_id in later:
                where += " (tuned later)"
            if run.run_id in done:
                print(f"{run.run_id:<34} {','.join(run.roles):<11} {where[:40]:<40} {network['params']:>10,} "
                      f"{network['flops_per_image'] / 1e6:>9.1f}M {'':>7} {'done':>7}", flush=True)
                continue
            devices.add(str(training_device(config)))
            if run.config_key not in probes:
                probes[run.config_key] = probe_images_per_s(run, config)
            seconds = factor * estimate_seconds(config, probes[run.config_key])
            total += seconds
            print(f"{run.run_id:<34} {','.join(run.roles):<11} {where[:40]:<40} {network['params']:>10,} "
                  f"{network['flops_per_image'] / 1e6:>9.1f}M {probes[run.config_key]:>7.0f} {seconds:>7.0f}",
                  flush=True)
    finally:
        torch.set_num_threads(restore)
    note = (f"; runs of {', '.join(sorted(pending))} are planned with their first tuning candidate until those"
            " tuning runs are done") if pending else ""
    spent = f"{total / 3600:.1f} hours" if total >= 3600 else f"{max(1, round(total / 60))} min"
    left = len(runs) - len(done & {r.run_id for r in runs})
    progress = f" ({len(runs) - left} done, {left} to run)" if left < len(runs) else ""
    where = f" on {', '.join(sorted(devices))} of this machine, {threads} thread{'s' if threads != 1 else ''}"
    if not left:
        print(f"\n{len(runs)} runs, all done: nothing to run")
        return
    if calibrated:
        how = (f"the fastest of 3 steps per configuration on random input{where}, times {factor:.2f}: what"
               f" {calibrated[1]} finished runs at this thread count took against the same estimate")
    else:
        how = (f"the fastest of 3 steps per configuration on random input{where}; data loading, validation and"
               " Lightning's own work not included: no finished run to calibrate by")
    print(f"\n{len(runs)} runs{progress}; estimated {spent} for the runs to run ({how}){note}")
    after = sample(cores)
    others = others_busy_cores(before, after) if before is not None and after is not None else 0.0
    if others > BUSY_CORE_FRACTION:
        print(f"measured while other processes kept {others:.1f} of {len(cores)} cores busy: the probes ran slower than"
              " on a quiet machine; measure again when it is quiet")
