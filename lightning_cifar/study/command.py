"""``lightning-cifar study``: plan, run (resumably, shardably) and report a width/depth/MLP study."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import yaml

from lightning_cifar.errors import LightningCifarError
from lightning_cifar.files import atomic_write_json
from lightning_cifar.study.config import StudyConfig, load_study
from lightning_cifar.study.plan import Run, expand, parse_shard, shard

TRAIN_IMAGES = 45_000  # 50,000 minus the default 5,000 held out for validation


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(study: StudyConfig, data_dir: Optional[str]) -> dict[str, str]:
    import pytorch_lightning as pl

    if torch.cuda.is_available():
        hardware = f"{torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()}), {cpu_name()}"
    else:
        hardware = f"{cpu_name()}, {torch.get_num_threads()} threads, no GPU"
    return {
        "name": study.name,
        "hardware": hardware,
        "software": f"Python {platform.python_version()}, torch {torch.__version__}, pytorch-lightning {pl.__version__}",
        "data": f"CIFAR-10 from {data_dir or study.recipe['data'].get('data_dir', './data')}",
        "recipe": yaml.safe_dump(study.recipe, sort_keys=True),
        "axes": ",".join(axis.name for axis in study.axes),  # the report follows the config's order
    }


def probe_images_per_s(run: Run, config: Any, steps: int = 3) -> float:
    """Training images/s of the run's network on random input, with the run's batch size and precision
    (``config``: the run's configuration as fit's parser completed it, defaults included)."""
    from lightning_cifar.model import Classifier

    model = Classifier(**{k: v for k, v in config.model.as_dict().items() if k != "num_classes"})
    batch = int(config.data.batch_size)
    precision = str(config.trainer.precision)
    x, y = torch.rand(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.startswith("bf16"))

    def step() -> None:
        with autocast:
            loss = model.loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - started)


def dry_run(runs: list[Run], configs: dict[str, Any]) -> None:
    from lightning_cifar.study.runner import describe_network

    probes: dict[str, float] = {}
    total = 0.0
    print(f"{'run':<34} {'axis points':<34} {'params':>10} {'FLOPs/img':>10} {'img/s':>7} {'est. s':>7}")
    for run in runs:
        config = configs[run.run_id]
        epochs, tta = int(config.trainer.max_epochs), 2 if config.model.tta else 1
        params, flops = describe_network(run)
        if run.config_key not in probes:
            probes[run.config_key] = probe_images_per_s(run, config)
        ips = probes[run.config_key]
        # Training, plus validation each epoch and one test pass (forward only: ~1/3 of a step).
        seconds = epochs * TRAIN_IMAGES / ips + tta * (epochs * 5_000 + 10_000) / (3 * ips)
        total += seconds
        where = ", ".join(f"{p.axis}={p.value}" for p in run.points)
        print(f"{run.run_id:<34} {where:<34} {params:>10,} {flops / 1e6:>9.1f}M {ips:>7.0f} {seconds:>7.0f}",
              flush=True)
    epochs = sorted({int(c.trainer.max_epochs) for c in configs.values()})
    print(f"\n{len(runs)} runs, {'/'.join(map(str, epochs))} epochs each; estimated {total / 60:.1f} minutes in all "
          "(from a 3-step probe on random input on this machine; data loading not included)")


def study_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lightning-cifar study",
        description="Width sweep, depth sweep and CNN-vs-MLP comparison as one resumable command, with a report.",
    )
    parser.add_argument("-c", "--config", required=True, help="study config (YAML), e.g. configs/study/quick-cpu.yaml")
    parser.add_argument("--out", required=True, help="output folder: results, TensorBoard logs, report")
    parser.add_argument("--dry-run", action="store_true", help="print the plan with sizes and time estimates; train nothing")
    parser.add_argument("--shard", default="0/1", help="K/N: run only every N-th run starting at K (default 0/1)")
    parser.add_argument("--report-only", action="store_true", help="merge the results that exist and write the report")
    parser.add_argument("--data-dir", help="folder containing cifar-10-batches-py/ (overrides recipe.data.data_dir)")
    args = parser.parse_args(list(argv))

    study = load_study(args.config)
    k, n = parse_shard(args.shard)
    runs = shard(expand(study), k, n)
    if not runs:
        raise LightningCifarError(f"shard {args.shard} of {args.config} has no runs")
    out = Path(args.out)
    command = f"lightning-cifar study -c {args.config} --out {args.out}"
    if args.data_dir:
        command += f" --data-dir {args.data_dir}"

    from lightning_cifar.study.runner import check_runs, execute, write_results_csv

    if args.dry_run or not args.report_only:
        configs = check_runs(runs, out, args.data_dir)  # before anything trains or is written
    if args.dry_run:
        dry_run(runs, configs)
        return 0
    from lightning_cifar.study.report import write_report

    env_path = out / "environment.json"
    planned = {run.run_id for run in expand(study)}
    if args.report_only:
        write_results_csv(out, planned)
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(env_path, environment(study, args.data_dir))
        execute(runs, out, data_dir=args.data_dir, log=lambda line: print(line, flush=True), planned=planned)
    env = json.loads(env_path.read_text()) if env_path.is_file() else {}
    try:
        report = write_report(out, env, command)
    except ValueError as exc:
        raise LightningCifarError(str(exc)) from exc
    print(f"report: {report}", file=sys.stderr)
    return 0
