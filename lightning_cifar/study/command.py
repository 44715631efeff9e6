"""``lightning-cifar study``: plan, tune, run (resumably, shardably) and report a width/depth/MLP study."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from lightning_cifar.errors import LightningCifarError
from lightning_cifar.files import atomic_write_json
from lightning_cifar.study.config import StudyConfig, load_study
from lightning_cifar.study.plan import Run, choose, expand, parse_shard, pending_families, shard

TRAIN_IMAGES = 45_000  # 50,000 minus the default 5,000 held out for validation
STUDY_FILE = "study.json"  # the parsed config, next to the results: what the report is about


def study_record(study: StudyConfig) -> dict[str, Any]:
    """The study as the report needs it: axes with their points, scales and kinds, baselines, tuning grids."""
    record = dataclasses.asdict(study)
    record["axes"] = [{**dataclasses.asdict(axis), "points": [{"value": p.value, "label": p.label, "settings": p.settings}
                                                             for p in axis.points]} for axis in study.axes]
    return record


def training_device(config: Any) -> torch.device:
    """The device a run with this parsed configuration trains on (the first one)."""
    accelerator = str(config.trainer.accelerator)
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def probe_images_per_s(run: Run, config: Any, steps: int = 3) -> float:
    """Training images/s of the run's network on random input, with the run's batch size and precision,
    on the device it will train on (``config``: its configuration as fit's parser completed it)."""
    from lightning_cifar.training.classifier import Classifier

    device = training_device(config)
    model = Classifier(**{k: v for k, v in config.model.as_dict().items() if k != "num_classes"}).to(device)
    batch = int(config.data.batch_size)
    precision = str(config.trainer.precision)
    x, y = torch.rand(batch, 3, 32, 32, device=device), torch.randint(0, 10, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    autocast = torch.autocast(device.type, dtype=dtype, enabled=precision.startswith(("bf16", "16")))

    def step() -> None:
        with autocast:
            loss = model.loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch / (time.perf_counter() - started)


def estimate_seconds(config: Any, images_per_s: float) -> float:
    """Training, plus validation each epoch, the clean training subset and one test pass (forward only: ~1/3 of a step)."""
    epochs, tta = int(config.trainer.max_epochs), 2 if config.model.tta else 1
    return epochs * TRAIN_IMAGES / images_per_s + tta * (epochs * 10_000 + 10_000) / (3 * images_per_s)


def dry_run(runs: list[Run], configs: dict[str, Any], pending: set[str]) -> None:
    from lightning_cifar.study.runner import describe_network

    probes: dict[str, float] = {}
    total = 0.0
    print(f"{'run':<34} {'role':<6} {'points':<40} {'params':>10} {'FLOPs/img':>10} {'img/s':>7} {'est. s':>7}")
    devices = set()
    for run in runs:
        config = configs[run.run_id]
        devices.add(str(training_device(config)))
        network = describe_network(run)
        if run.config_key not in probes:
            probes[run.config_key] = probe_images_per_s(run, config)
        seconds = estimate_seconds(config, probes[run.config_key])
        total += seconds
        where = "; ".join(p.label for p in run.points)
        if run.family in pending and "tune" not in run.roles:
            where += " (tuned later)"
        print(f"{run.run_id:<34} {','.join(run.roles):<6} {where[:40]:<40} {network['params']:>10,} "
              f"{network['flops_per_image'] / 1e6:>9.1f}M {probes[run.config_key]:>7.0f} {seconds:>7.0f}", flush=True)
    note = (f"; families {', '.join(sorted(pending))} are planned with their first tuning candidate until their"
            " tuning runs are done") if pending else ""
    print(f"\n{len(runs)} runs; estimated {total / 3600:.1f} hours in all (a 3-step probe per configuration on random"
          f" input on {', '.join(sorted(devices))} of this machine; data loading not included){note}")


@dataclasses.dataclass
class Pending:
    """Where a study stands: the plan, this shard's runs without a result, those of them that may start now
    (tuning runs, and runs of families whose tuning is complete), and the families still being tuned."""

    plan: list[Run]
    shard_size: int
    mine: list[Run]
    todo: list[Run]
    blocked: set[str]


def current_state(study: StudyConfig, out: Path, k: int, n: int) -> Pending:
    from lightning_cifar.study.runner import RESULT_VERSION, load_results

    results = {r["run_id"]: r for r in load_results(out) if r.get("version") == RESULT_VERSION}
    tuning = choose(study, results)
    plan = expand(study, tuning)
    blocked = pending_families(study, tuning)
    ours = shard(plan, k, n)
    mine = [r for r in ours if r.run_id not in results]
    todo = [r for r in mine if "tune" in r.roles or r.family not in blocked]
    return Pending(plan, len(ours), mine, todo, blocked)


class Progress:
    """The lines a launcher prints: what is done before it starts, each run as it starts and as it finishes
    (accuracy, seconds, runs left and the time left at this pace), and why it stops with runs left."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.spent: list[float] = []
        self.started = 0

    def begin(self, state: Pending) -> None:
        self.log(f"{state.shard_size - len(state.mine)} of {state.shard_size} runs already done; "
                 f"{len(state.mine)} to run")

    def start(self, run: Run) -> None:
        self.started += 1
        self.log(f"[{self.started}] {run.run_id} ({'; '.join(p.label for p in run.points)})")

    def finish(self, run: Run, result: dict[str, Any], seconds: float, left: int, parallel: int = 1) -> None:
        self.spent.append(seconds)
        eta = sum(self.spent) / len(self.spent) * left / max(1, parallel)
        val = f"val acc {result['val_acc']:.4f}" if result["val_acc"] is not None else "no validation"
        points = "; ".join(p.label for p in run.points)
        self.log(f"    {run.run_id} ({points}): test acc {result['test_acc']:.4f}, {val}, {seconds:.0f} s;"
                 f" {left} runs left in this shard, about {eta / 60:.0f} min at this pace")

    def waiting(self, state: Pending) -> None:
        if state.mine:
            self.log(f"{len(state.mine)} runs wait for the tuning of {', '.join(sorted(state.blocked))}, whose runs"
                     " belong to other shards: run this command again once they are done")


def execute(study: StudyConfig, out: Path, k: int, n: int, data_dir: Optional[str] = None,
            log: Callable[[str], None] = print) -> None:
    """Run this shard's runs that have no result yet, one after another in this process: the tuning runs
    first, then, once a family's tuning is complete, the runs that use its winner."""
    from lightning_cifar.data.datamodule import CIFAR10DataModule
    from lightning_cifar.study.runner import check_runs, run_one, write_results_csv

    out.mkdir(parents=True, exist_ok=True)
    loaded: Optional[CIFAR10DataModule] = None
    checked: set[str] = set()
    progress = Progress(log)
    while True:
        state = current_state(study, out, k, n)
        if not progress.started:
            progress.begin(state)
        unchecked = [r for r in state.todo if r.run_id not in checked]
        if unchecked:
            check_runs(unchecked, out, data_dir)  # before any of them trains
            checked.update(r.run_id for r in unchecked)
        if not state.todo:
            write_results_csv(out, state.plan)
            progress.waiting(state)
            return
        run = state.todo[0]
        progress.start(run)
        started = time.perf_counter()
        result, loaded = run_one(run, out, data_dir, loaded)
        write_results_csv(out, state.plan)
        progress.finish(run, result, time.perf_counter() - started, len(state.mine) - 1)


def study_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lightning-cifar study",
        description="Width and depth sweeps and CNN-vs-MLP comparison as one resumable command, with a report.",
    )
    parser.add_argument("-c", "--config", required=True, help="study config (YAML), e.g. configs/study/quick-cpu.yaml")
    parser.add_argument("--out", required=True, help="output folder: results, TensorBoard logs, report")
    parser.add_argument("--dry-run", action="store_true", help="print the plan with sizes and time estimates; train nothing")
    parser.add_argument("--shard", default="0/1", help="K/N: run only every N-th run starting at K (default 0/1)")
    parser.add_argument("--report-only", action="store_true", help="merge the results that exist and write the report")
    parser.add_argument("--data-dir", help="folder containing cifar-10-batches-py/ (overrides recipe.data.data_dir)")
    parser.add_argument("--launcher", choices=["sequential", "ray"], default="sequential",
                        help="sequential: one run after another in this process (default); ray: every run a Ray task")
    parser.add_argument("--ray-address", help="address of a running Ray cluster (default: RAY_ADDRESS, else a local"
                        " instance started for the study)")
    parser.add_argument("--cpus-per-run", type=float, default=1.0, help="CPUs Ray reserves for each run (default 1)")
    parser.add_argument("--gpus-per-run", type=float, default=0.0,
                        help="GPUs Ray reserves for each run; fractions share a GPU, e.g. 0.25 (default 0)")
    args = parser.parse_args(list(argv))
    ray_only = [flag for flag, given in (("--ray-address", args.ray_address is not None),
                                         ("--cpus-per-run", args.cpus_per_run != 1.0),
                                         ("--gpus-per-run", args.gpus_per_run != 0.0)) if given]
    if ray_only and args.launcher != "ray":
        raise LightningCifarError(f"{', '.join(ray_only)} only apply to --launcher ray")

    study = load_study(args.config)
    k, n = parse_shard(args.shard)
    out = Path(args.out)
    command = f"lightning-cifar study -c {args.config} --out {args.out}"
    if args.data_dir:
        command += f" --data-dir {args.data_dir}"
    from lightning_cifar.study.runner import RESULT_VERSION, check_runs, load_results, write_results_csv

    if args.dry_run:
        results = {r["run_id"]: r for r in load_results(out) if r.get("version") == RESULT_VERSION}
        tuning = choose(study, results)
        runs = shard(expand(study, tuning), k, n)
        if not runs:
            raise LightningCifarError(f"shard {args.shard} of {args.config} has no runs")
        dry_run(runs, check_runs(runs, out, args.data_dir), pending_families(study, tuning))
        return 0
    from lightning_cifar.study.report import write_report

    if not args.report_only:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / STUDY_FILE, study_record(study))
        log = lambda line: print(line, flush=True)  # noqa: E731
        if args.launcher == "ray":
            from lightning_cifar.study.launchers.ray import execute_on_ray

            # Workers may start in another folder: a relative data path means the driver's.
            data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
            execute_on_ray(study, out, k, n, data_dir=data_dir, address=args.ray_address,
                           cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run, log=log)
        else:
            execute(study, out, k, n, data_dir=args.data_dir, log=log)
    results = {r["run_id"]: r for r in load_results(out) if r.get("version") == RESULT_VERSION}
    plan = expand(study, choose(study, results))
    write_results_csv(out, plan)
    try:
        report = write_report(out, study, plan, command)
    except ValueError as exc:
        raise LightningCifarError(str(exc)) from exc
    print(f"report: {report}", file=sys.stderr)
    return 0
