"""Two variants of a speedrun config, seed by seed, from ``speedrun_ablation.py``'s ``--json`` files.

    python benchmarks/paired_ablation.py \\
        --baseline benchmarks/speedrun/ablation-speedrun-cpu-94-9ep-full-val-amx*.json \\
        --candidate benchmarks/speedrun/ablation-speedrun-cpu-94-9ep-triangle-lookahead-val*.json

A comparison of two variants that must be chosen on validation often runs as several invocations (a seed at a
time, so that a session that ends keeps what finished), and a variant that differs by ``--set`` from the other
carries the same variant name. This pools each side's files (each side must be one variant of one config with
the same ``--set`` changes and scoring, or it is refused in one line), pairs the runs by seed, and prints each
side's mean and spread on the split it was chosen on and on the test set, the paired differences, and a paired
t-test (``scipy.stats.ttest_rel``) where there are at least two pairs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from scipy import stats


def side(paths: list[str], name: str) -> tuple[str, dict[int, dict[str, Any]]]:
    """The one variant ``paths`` hold, described, and its runs by seed."""
    settings, runs = set(), {}
    for path in paths:
        try:
            record = json.loads(Path(path).read_text())
            results = record["results"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            sys.exit(f"--{name} {path}: not a speedrun_ablation.py --json file ({exc})")
        for variant, rows in results.items():
            settings.add((record["config"], tuple(record.get("changes") or ()), record.get("score", "test"), variant))
            for row in rows:
                if row["seed"] in runs:
                    sys.exit(f"--{name}: seed {row['seed']} appears twice ({path}); give each seed's file once")
                runs[row["seed"]] = row
    if len(settings) != 1:
        sys.exit(f"--{name}: the files hold {len(settings)} different variants or settings; one side is one variant"
                 f" ({'; '.join(sorted(str(s) for s in settings))})")
    config, changes, score, variant = settings.pop()
    return f"`{variant}` of {config} ({', '.join(changes) or 'as written'}; chosen on {score})", runs


def summary(values: list[float], signed: bool) -> str:
    mean = 100 * statistics.mean(values)
    return (f"{mean:+.2f}" if signed else f"{mean:.2f} %") + (f" ± {100 * statistics.stdev(values):.2f}"
                                                              if len(values) > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", nargs="+", required=True, help="the files of the variant compared against")
    parser.add_argument("--candidate", nargs="+", required=True, help="the files of the variant tried")
    args = parser.parse_args()
    (base_name, base), (cand_name, cand) = side(args.baseline, "baseline"), side(args.candidate, "candidate")
    seeds = sorted(set(base) & set(cand))
    if not seeds:
        sys.exit(f"no seed in both: baseline has {sorted(base)}, candidate {sorted(cand)}")
    print(f"baseline: {base_name}\ncandidate: {cand_name}\npaired seeds: {seeds}"
          + (f" (unpaired, left out: {sorted(set(base) ^ set(cand))})" if set(base) != set(cand) else "") + "\n")
    print("| seed | baseline val | candidate val | difference | baseline test | candidate test | difference |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    columns: dict[str, list[float]] = {k: [] for k in ("bv", "cv", "dv", "bt", "ct", "dt")}
    for seed in seeds:
        b, c = base[seed], cand[seed]
        bv, cv = b.get("final_val_acc"), c.get("final_val_acc")
        bt, ct = b["final_test_acc"], c["final_test_acc"]
        row = [bv, cv, None if bv is None or cv is None else cv - bv, bt, ct, ct - bt]
        for key, value in zip(columns, row):
            if value is not None:
                columns[key].append(value)
        print(f"| {seed} | " + " | ".join("–" if v is None else f"{100 * v:+.2f}" if k in ("dv", "dt")
                                          else f"{100 * v:.2f} %" for k, v in zip(columns, row)) + " |")
    means = (summary(columns[k], signed=k.startswith("d")) if columns[k] else "–" for k in columns)
    print("| mean ± sd | " + " | ".join(means) + " |\n")
    for split, b, c in (("validation", columns["bv"], columns["cv"]), ("test", columns["bt"], columns["ct"])):
        if len(b) >= 2 and len(b) == len(c):
            test = stats.ttest_rel(c, b)
            print(f"{split}: candidate − baseline {100 * statistics.mean(c) - 100 * statistics.mean(b):+.2f} points"
                  f" over {len(b)} pairs, paired t-test p = {test.pvalue:.2f}")


if __name__ == "__main__":
    main()
