"""``lightning-cifar study``: plan, tune, run (resumably, shardably) and report a width/depth/MLP study."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

from lightning_cifar.errors import LightningCifarError
from lightning_cifar.files import atomic_write_json, ensure_writable
from lightning_cifar.study.config import StudyConfig, load_study
from lightning_cifar.study.dry_run import dry_run
from lightning_cifar.study.launchers.local import execute
from lightning_cifar.study.launchers.ray import execute_on_ray
from lightning_cifar.study.plan import choose, expand, parse_shard, pending_families, shard, waits_for
from lightning_cifar.study.report import write_report
from lightning_cifar.study.runner import RESULT_VERSION, check_runs, check_same_data, load_results, write_results_csv

STUDY_FILE = "study.json"  # the parsed config, next to the results: what the report is about


def study_record(study: StudyConfig) -> dict[str, Any]:
    """The study as the report needs it: axes with their points, scales and kinds, baselines, tuning grids."""
    record = dataclasses.asdict(study)
    record["axes"] = [{**dataclasses.asdict(axis), "points": [{"value": p.value, "label": p.label, "settings": p.settings}
                                                             for p in axis.points]} for axis in study.axes]
    return record


def recipe_overrides(words: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--trainer.KEY=VALUE`` / ``--model.KEY=VALUE`` / ``--data.KEY=VALUE`` words as recipe settings (values read as
    YAML, as fit reads them); anything else is refused in one line."""
    recipe: dict[str, dict[str, Any]] = {}
    for word in words:
        key, eq, text = word[2:].partition("=") if word.startswith("--") else ("", "", "")
        section, dot, name = key.partition(".")
        if not eq or not dot or not name or section not in ("trainer", "model", "data"):
            raise LightningCifarError(f"{word}: not an option of `lightning-cifar study`; recipe settings are given as"
                                      " --trainer.KEY=VALUE, --model.KEY=VALUE or --data.KEY=VALUE (see --help)")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        recipe.setdefault(section, {})[name] = value
    return recipe


def study_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lightning-cifar study",
        description="Width and depth sweeps and CNN-vs-MLP comparison as one resumable command, with a report.",
        allow_abbrev=False,  # --data.X=V words are the recipe's, never a shortened option of ours
    )
    parser.add_argument("-c", "--config", required=True, help="study config (YAML), e.g. configs/study/quick-cpu.yaml")
    parser.add_argument("--out", required=True, help="output folder: results, TensorBoard logs, report")
    parser.add_argument("--dry-run", action="store_true", help="print the plan with sizes and time estimates; train nothing")
    parser.add_argument("--shard", default="0/1", help="K/N: run only every N-th run starting at K (default 0/1)")
    parser.add_argument("--report-only", action="store_true", help="merge the results that exist and write the report")
    parser.add_argument("--data.data_dir", "--data-dir", dest="data_dir",
                        help="folder containing cifar-10-batches-py/ (overrides recipe.data.data_dir)")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                        help="seeds of every point, e.g. --seeds 0 for a quick trial (overrides the study's seeds)")
    parser.add_argument("--epochs", type=int, metavar="N", help="epochs of every run (sets recipe.trainer.max_epochs)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="threads every run trains with, under either launcher, recorded in its result.json"
                        " (default: this process's count, torch.get_num_threads())")
    parser.add_argument("--launcher", choices=["sequential", "ray"], default="sequential",
                        help="sequential: one run after another in this process (default); ray: every run a Ray task")
    parser.add_argument("--ray-address", help="address of a running Ray cluster (default: RAY_ADDRESS, else a local"
                        " instance started for the study)")
    parser.add_argument("--cpus-per-run", type=float, help="CPUs Ray reserves for each run (default: its --threads,"
                        " so that runs side by side never share a core's threads)")
    parser.add_argument("--gpus-per-run", type=float, default=0.0,
                        help="GPUs Ray reserves for each run; fractions share a GPU, e.g. 0.25 (default 0)")
    parser.epilog = ("Any other --trainer.KEY=VALUE, --model.KEY=VALUE or --data.KEY=VALUE sets that key of the study's"
                     " recipe for every run, as in `lightning-cifar fit`.")
    args, rest = parser.parse_known_args(list(argv))
    recipe = recipe_overrides(rest)
    if args.epochs is not None:
        if args.epochs < 1:
            raise LightningCifarError(f"--epochs={args.epochs}: must be at least 1")
        recipe.setdefault("trainer", {})["max_epochs"] = args.epochs
    ray_only = [flag for flag, given in (("--ray-address", args.ray_address is not None),
                                         ("--cpus-per-run", args.cpus_per_run is not None),
                                         ("--gpus-per-run", args.gpus_per_run != 0.0)) if given]
    if ray_only and args.launcher != "ray":
        raise LightningCifarError(f"{', '.join(ray_only)} only apply to --launcher ray")

    if args.threads is not None and args.threads < 1:
        raise LightningCifarError(f"--threads={args.threads}: must be at least 1")
    threads = args.threads or torch.get_num_threads()
    study = load_study(args.config, seeds=args.seeds, recipe=recipe)
    k, n = parse_shard(args.shard)
    out = Path(args.out)
    command = f"lightning-cifar study -c {args.config} --out {args.out}"
    if args.data_dir:
        command += f" --data.data_dir={args.data_dir}"
    if args.seeds is not None:
        command += " --seeds " + " ".join(map(str, args.seeds))
    if args.epochs is not None:
        command += f" --epochs {args.epochs}"
    command += "".join(f" {word}" for word in rest)
    if args.dry_run:
        results = {r["run_id"]: r for r in load_results(out) if r.get("version") == RESULT_VERSION}
        tuning = choose(study, results)
        runs = shard(expand(study, tuning), k, n)
        if not runs:
            raise LightningCifarError(f"shard {args.shard} of {args.config} has no runs")
        pending = pending_families(study, tuning)
        later = {r.run_id for r in runs if waits_for(r, study, pending)}
        dry_run(runs, check_runs(runs, out, threads, args.data_dir), pending, later, threads, results)
        return 0
    if not args.report_only:
        check_same_data(out, args.data_dir or study.recipe["data"].get("data_dir"))
        ensure_writable(out, 64 * 2**20, "--out DIR")  # before the first run, not after it
        atomic_write_json(out / STUDY_FILE, study_record(study))
        log = lambda line: print(line, flush=True)  # noqa: E731
        if args.launcher == "ray":
            # Workers may start in another folder: a relative data path means the driver's.
            data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
            execute_on_ray(study, out, k, n, threads, data_dir=data_dir, address=args.ray_address,
                           cpus_per_run=args.cpus_per_run if args.cpus_per_run is not None else float(threads),
                           gpus_per_run=args.gpus_per_run, log=log)
        else:
            execute(study, out, k, n, threads, data_dir=args.data_dir, log=log)
    results = {r["run_id"]: r for r in load_results(out) if r.get("version") == RESULT_VERSION}
    plan = expand(study, choose(study, results))
    write_results_csv(out, plan)
    try:
        report = write_report(out, study, plan, command)
    except ValueError as exc:
        raise LightningCifarError(str(exc)) from exc
    print(f"report: {report}", file=sys.stderr)
    return 0
