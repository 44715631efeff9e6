"""Ours against airbench94 on the same CPU, side by side: each a whole process, alternating, several seeds.

    python benchmarks/vs_airbench.py --seeds 0 1 2 --json benchmarks/speedrun/vs-airbench.jsonl
    python benchmarks/vs_airbench.py --seeds 0 --airbench-precision bf16 autocast fp32 --json FILE --resume
    python benchmarks/vs_airbench.py --config configs/speedrun-cpu-90.yaml --seeds 0 -- --trainer.max_epochs=8
    python benchmarks/vs_airbench.py --json FILE --resume --label "7 epochs" -- --trainer.max_epochs=7

For every seed: airbench94 in the first ``--airbench-precision`` (``benchmarks/airbench_cpu.py``: the PyPI
package, unmodified, through a documented CPU shim), then ``lightning-cifar fit -c CONFIG`` as
``time_to_accuracy.py`` runs it (test accuracy after every epoch, the time of those extra test passes left out),
then airbench94 in the other precisions. Each record is appended to ``--json`` as it finishes, so a long
comparison resumes (``--resume``) instead of restarting. Another version of ours (``--label``, with its own
arguments after ``--``) added to the same file with ``--resume`` reuses the airbench runs the file holds.

The table: seconds per training epoch, epochs and time until test accuracy first reaches ``--target``
(airbench tests with its TTA only at the end, so for it that is its whole run, or "not reached"; for ours, the
training until the end of the first epoch that tests there, plus that one test pass), the final
accuracy (each side with its own test-time augmentation), and the whole run as airbench's own timer counts it
(whitening set-up, training, the final TTA test pass; not its per-epoch test passes, not the process's start) and
for ours the same plus the process's start and the data's loading (``fit``'s wall time less the benchmark's
extra test passes, plus the last one); ours over airbench's as ratios. Both processes' wall times are in the
records too. Time nothing else while it runs: on 2 cores a second process halves every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import time_to_accuracy  # noqa: E402  (our side is that benchmark's run, unchanged)

# Every wait on a child has a deadline: airbench's whole run took 1,075 s on this machine in bfloat16.
AIRBENCH_TIMEOUT_S = 3 * 3600


def run_airbench(seed: int, precision: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(HERE / "airbench_cpu.py"), f"--seed={seed}", f"--precision={precision}",
           f"--data-dir={args.data_dir}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=AIRBENCH_TIMEOUT_S,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        raise SystemExit(f"airbench94 seed {seed} ({precision}) failed:\n{proc.stderr[-3000:]}")
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    times = [e["total_time_seconds"] for e in record["epochs"]]
    record["epoch_s"] = [b - a for a, b in zip([0.0, *times], times)][1:]  # the first includes whitening set-up
    return record


def run_ours(seed: int, args: argparse.Namespace) -> dict:
    run = time_to_accuracy.run_seed(args.config, seed, args)
    walls = [e["train_wall_s"] for e in run["epochs"]]
    return {"who": "ours", "config": args.config, "precision": args.label, "seed": seed,
            "epochs": run["epochs"], "epoch_s": [b - a for a, b in zip(walls, walls[1:])],
            "final_acc": run["epochs"][-1]["test_acc"], "fit_wall_s": run["fit_wall_s"],
            # what airbench's timer counts: training, then one test pass with test-time augmentation (the last
            # epoch's); ours also counts the process's start and the data's loading, which airbench's leaves out
            "time_s": run["fit_wall_s"] + last_test_pass_s(run["epochs"]),
            "process_wall_s": run["process_wall_s"], "extra_args": args.extra, "kept_at": run["kept_at"]}


def last_test_pass_s(epochs: list[dict]) -> float:
    eval_s = [e["eval_s"] for e in epochs]
    return eval_s[-1] - (eval_s[-2] if len(eval_s) > 1 else 0.0)


def key(record: dict) -> tuple:
    return record["who"], record["precision"], record["seed"]


def time_to(record: dict, target: float) -> float | None:
    """Ours: seconds until a test pass first finds ``target``: the training until that epoch's end (start-up
    included) plus that one test pass (airbench's time to its accuracy, its whole run, includes its test pass too)."""
    reached = time_to_accuracy.first_reaching(record["epochs"], target)
    return None if reached is None else reached["train_wall_s"] + last_test_pass_s(record["epochs"])


def seconds_per_epoch(record: dict) -> float:
    """The median epoch; for ours tested after one epoch only (``--from-epoch`` its last), its training time over
    its epochs, the process's start and the whitening set-up included (a little above its median epoch)."""
    if record["epoch_s"]:
        return statistics.median(record["epoch_s"])
    last = record["epochs"][-1]
    return last["train_wall_s"] / last["epoch"]


def summary(record: dict, target: float) -> dict:
    """One process's figures for the table."""
    if record["who"] == "ours":
        reached = time_to_accuracy.first_reaching(record["epochs"], target)
        return {"epoch_s": seconds_per_epoch(record),
                "final": record["final_acc"], "epochs_to": reached["epoch"] if reached else None,
                "time_to": time_to(record, target), "wall": record["time_s"]}
    reached = record["tta_acc"] >= target
    return {"epoch_s": statistics.median(record["epoch_s"]) if record["epoch_s"] else float("nan"),
            "final": record["tta_acc"], "epochs_to": record["train_epochs"] if reached else None,
            "time_to": record["airbench_timer_s"] if reached else None, "wall": record["airbench_timer_s"]}


def records_of(records: list[dict], who: str) -> list[dict]:
    return [r for r in records if r["who"] == who]


def mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def table(records: list[dict], target: float) -> str:
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault((record["who"], record["precision"]), []).append(summary(record, target))
    lines = [f"| who | precision | seeds | s / epoch | epochs to {target:.0%} | time to {target:.0%} (s) |"
             " final accuracy | whole run (s) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (who, precision), rows in groups.items():
        reached = sum(r["time_to"] is not None for r in rows)

        def fmt(name: str, digits: int) -> str:
            value = mean([r[name] for r in rows])
            return "not reached" if value is None else f"{value:,.{digits}f}"

        lines.append(f"| {who} | {precision} | {len(rows)} | {fmt('epoch_s', 1)} | {fmt('epochs_to', 1)}"
                     f" ({reached} of {len(rows)}) | {fmt('time_to', 0)} | {mean([r['final'] for r in rows]):.4f}"
                     f" | {fmt('wall', 0)} |")
    for (who, label), ours in groups.items():
        if who != "ours":
            continue
        mine = [r for r in records_of(records, "ours") if r["precision"] == label]
        for (other, precision), rows in groups.items():
            if other == "ours":
                continue
            ratio = mean([r["wall"] for r in ours]) / mean([r["wall"] for r in rows])
            per_epoch = mean([r["epoch_s"] for r in ours]) / mean([r["epoch_s"] for r in rows])
            lines.append(f"\nours ({label}) / airbench94 ({precision}): whole run {ratio:.2f}x, seconds per epoch"
                         f" {per_epoch:.2f}x")
            # At equal accuracy: when ours first tests at airbench's mean final accuracy, against its whole run.
            theirs = mean([r["final"] for r in rows])
            at = [time_to(r, theirs) for r in mine]
            reached = [a for a in at if a is not None]
            # A run tested from a later epoch (--from-epoch) may have got there before its first test pass.
            early = sum(r["epochs"][0]["test_acc"] >= theirs for r in mine)
            if reached:
                lines.append(f"ours ({label}) at airbench94's final accuracy ({theirs:.4f}): {mean(reached):,.0f} s"
                             f" ({len(reached)} of {len(at)} seeds reach it),"
                             f" {mean(reached) / mean([r['wall'] for r in rows]):.2f}x its whole run"
                             + (f"; an upper bound: {early} of them already at their first test pass (epoch"
                                f" {mine[0]['epochs'][0]['epoch']})" if early else ""))
            else:
                lines.append(f"ours ({label}) never tests at airbench94's final accuracy ({theirs:.4f})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "speedrun-cpu-94.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--airbench-precision", nargs="+", default=["bf16"], choices=["bf16", "fp32", "autocast"])
    parser.add_argument("--target", type=float, default=0.94)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "cifar10"))
    parser.add_argument("--json", help="append every finished process's record to this JSON-lines file")
    parser.add_argument("--resume", action="store_true", help="skip what --json already holds")
    parser.add_argument("--keep-runs", metavar="DIR", help=time_to_accuracy.KEEP_RUNS_HELP)
    parser.add_argument("--from-epoch", type=int, default=1, help="ours: test after this epoch and later ones")
    parser.add_argument("--skip-ours", action="store_true", help="airbench94 only")
    parser.add_argument("--skip-airbench", action="store_true",
                        help="ours only; the table compares it with the airbench94 runs --json holds (from another"
                             " session, perhaps: say so where you quote the ratio)")
    parser.add_argument("--label", default="as configured",
                        help="ours: the name its records and table rows carry, so that several versions of ours"
                             " (another --config, other arguments after --) share one --json file and its airbench"
                             " runs; --resume skips what that file holds under this label")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.extra = argv[split + 1:]  # more lightning-cifar arguments for our side, after --
    time_to_accuracy.check_keep_runs(args.keep_runs)
    if args.resume and not args.json:
        parser.error("--resume needs --json FILE")
    if args.skip_ours and args.skip_airbench:
        parser.error("--skip-ours with --skip-airbench leaves nothing to run; drop one")
    records = []
    if args.resume and Path(args.json).is_file():
        records = [json.loads(line) for line in Path(args.json).read_text().splitlines() if line.strip()]
    done = {key(r) for r in records}
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    for seed in args.seeds:
        # Ours right after airbench's first precision: the pair the table's ratio is about runs back to back.
        todo = [] if args.skip_airbench else [("airbench94", p) for p in args.airbench_precision]
        todo[1:1] = [] if args.skip_ours else [("ours", None)]
        for who, precision in todo:
            if (who, precision or args.label, seed) in done:
                continue
            record = run_ours(seed, args) if who == "ours" else run_airbench(seed, precision, args)
            record["load_average_after"] = os.getloadavg()[0]
            record["finished"] = time.strftime("%Y-%m-%d %H:%M")  # runs in one file may come from several sessions
            records.append(record)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(record) + "\n")
            s = summary(record, args.target)
            print(f"{who} ({record['precision']}) seed {seed}: final {s['final']:.4f}, {s['epoch_s']:.1f} s per"
                  f" epoch, whole run {s['wall']:.0f} s, load average after {record['load_average_after']:.2f}",
                  flush=True)
    print(table(records, args.target))


if __name__ == "__main__":
    main()
