"""Each speedrun trick removed in turn: time to a target and final accuracy, next to the full recipe.

    python benchmarks/speedrun_ablation.py configs/speedrun-cpu-90.yaml --target 0.90 --seeds 0
    python benchmarks/speedrun_ablation.py configs/speedrun-cpu-94.yaml --target 0.94 --only full no-muon
    python benchmarks/speedrun_ablation.py configs/speedrun-cpu-94.yaml --target 0.94 --only full switch-lookahead \\
        --set trainer.max_epochs=8 model.whiten_bias_epochs=3
    python benchmarks/speedrun_ablation.py configs/speedrun-cpu-90.yaml --target 0.90 --seeds 0 1 2 --score val \\
        --from-epoch 5 --only full airbench-schedule

A variant is the config with one setting changed back to the plain recipe's (written to a temporary config
file, then trained by `benchmarks/time_to_accuracy.py`'s runner: a fresh `lightning-cifar fit` per seed, the
test set scored after every epoch, start-up counted). Variants alternate seed by seed, so that a change in the
machine's load hits all of them. Removing one trick keeps every other setting, the learning rates too: a trick
whose removal would call for a retuned recipe shows up as a loss here, which the table says is an upper bound.

To choose between variants, score them on validation (``--score val``): 5,000 training images are held out
(``data.val_split``, where the config trains on all), Lightning validates once, after the last epoch, and the
table leads with that accuracy; the test set is still scored (after ``--from-epoch`` and later epochs) and
reported, never chosen on. The held-out images and the one validation pass are in the fit wall time.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import time_to_accuracy  # noqa: E402  (one runner for both benchmarks)

REPO = Path(__file__).resolve().parents[1]
Config = dict[str, Any]


def _set(path: str, value: Any) -> Callable[[Config], None]:
    def apply(config: Config) -> None:
        node = config
        *parents, leaf = path.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[leaf] = value

    return apply


def parse_change(text: str) -> tuple[str, object]:
    """``model.lr=0.2`` -> ("model.lr", 0.2); the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"setting {text!r}: expected KEY=VALUE, e.g. data.batch_size=1024")
    return key, yaml.safe_load(value)


def _get(config: Config, path: str) -> Any:
    value: Any = config
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _switch(path: str, on: Any = True, off: Any = False) -> Callable[[Config], None]:
    def apply(config: Config) -> None:
        _set(path, off if _get(config, path) else on)(config)  # an absent option is off, as the model's defaults are

    return apply


def _all(*changes: Callable[[Config], None]) -> Callable[[Config], None]:
    def apply(config: Config) -> None:
        for change in changes:
            change(config)

    return apply


KW = "model.backbone_kwargs"
LOOKAHEAD = "lightning_cifar.training.callbacks.lookahead.Lookahead"


def _switch_lookahead(config: Config) -> None:
    trainer = config.setdefault("trainer", {})
    before = list(trainer.get("callbacks") or [])
    kept = [c for c in before if not (isinstance(c, dict) and c.get("class_path") == LOOKAHEAD)]
    trainer["callbacks"] = kept if len(kept) < len(before) else [*kept, {"class_path": LOOKAHEAD}]

# name: (what it changes, the change). Each undoes one trick of the speedrun recipe, except those whose
# comments say they add or switch one.
VARIANTS: dict[str, tuple[str, Callable[[Config], None]]] = {
    "full": ("nothing: the config as written", lambda config: None),
    # SGD at the SGD part's small rate would starve the filters; 0.2 is our SGD recipes' rate (fast-cpu*.yaml).
    "no-muon": ("Muon for the filters: SGD with Nesterov for every weight, peak rate 0.2",
                _all(_set("model.optimizer", "sgd"), _set("model.lr", 0.2))),
    # Its padding, directions and bias schedule go with it (the model refuses them without the layer).
    "no-whiten": ("the frozen patch-whitening first layer",
                  _all(_set(f"{KW}.whiten", 0), _set(f"{KW}.whiten_padding", "same"),
                       _set(f"{KW}.whiten_directions", None), _set("model.whiten_bias_epochs", None))),
    # The ablation found identity init costing accuracy in the one-epoch config, which then dropped it:
    # this variant switches it, off where a config has it and on where it does not.
    "switch-dirac": ("identity initialisation of the convolutions, switched (on <-> off)", _switch(f"{KW}.dirac")),
    "no-frozen-norm": ("batch norm's frozen scale and larger running-stat momentum (back to PyTorch's 0.1)",
                       _all(_set(f"{KW}.norm_scale", True), _set(f"{KW}.norm_momentum", 0.1))),
    # Our recipes leave the logits unscaled (the speedruns' 1/9 goes with their own head and bias rates), so this
    # variant adds the trick instead of removing it.
    "head-scale-ninth": ("nothing; adds the speedruns' logits x1/9 (at the config's head rate)",
                         _set(f"{KW}.head_scale", 1 / 9)),
    # The speedrun configs train biases and batch-norm shifts at their own rate (10 in the 45 s one; 30, with no
    # classifier bias, in the 90 % and 94 % ones): off where a config has it, 10 where it does not.
    "switch-bias-lr": ("the biases' and batch-norm shifts' own rate (bias_lr), switched (10 <-> the head's rate)",
                       _switch("model.bias_lr", on=10.0, off=None)),
    # airbench pools right after a block's first convolution, before its batch norm and GELU (a quarter of the
    # pixels for those two); switched, as identity init is: to that order where a config pools after them, back.
    "switch-pool-order": ("pooling before the first batch norm and GELU of each block (airbench's order), switched",
                          lambda config: _set(f"{KW}.pool_position", "first" if _get(config, f"{KW}.pool_position")
                                              == "first_conv" else "first_conv")(config)),
    # airbench94 trains its whitening layer's bias for 3 of its 9.9 epochs. Switched: where a config trains it
    # throughout, adds the trick at airbench's share of the config's epochs (rounded: none of a 1-epoch config's);
    # where a config already stops it (the 94 % one), trains it throughout.
    "whiten-bias-share": ("the whitening bias trained for the first 3 of every 9.9 epochs only (airbench's), switched",
                          lambda config: _set("model.whiten_bias_epochs", None
                                              if _get(config, "model.whiten_bias_epochs") is not None
                                              else round(config["trainer"]["max_epochs"] * 3 / 9.9))(config)),
    # airbench94 resets its network to slow weights every 5 steps (Lookahead); Muon's airbench94_muon does not.
    # Switched: added (airbench's settings) where a config lacks it, removed where it has it.
    "switch-lookahead": ("Lookahead with airbench94's rising pull (every 5 steps, 0.95**5 x progress**3), switched",
                         _switch_lookahead),
    # airbench94's schedule: from 0.2x the peak rate, up to it at 23 % of the steps, down to 0.07x at the end
    # (its rates are decoupled from weight decay as our bias_lr groups already are: the shape is what differs).
    "airbench-schedule": ("nothing; the one-cycle's shape becomes airbench94's triangle (0.2x, peak at 23 %, 0.07x)",
                          _all(_set("model.warmup", 0.23), _set("model.start_factor", 0.2),
                               _set("model.end_factor", 0.07))),
    # airbench94_muon holds each filter bank at norm sqrt(out) before every step. Without it, the filters grow under
    # Muon's fixed-size steps (batch norm hides their scale from the output), so the rate they turn at falls faster
    # than the schedule's. Switched, as identity init is.
    "switch-muon-normalize": ("Muon's filters held at norm sqrt(out channels) before each step (airbench94_muon's), "
                              "switched", _switch("model.muon_normalize")),
    "random-flip": ("the alternating flip: random flips, same 2-pixel shifts", _set("data.augment", "shift_flip")),
    "no-label-smoothing": ("label smoothing", _set("model.label_smoothing", 0.0)),
    "no-tta": ("test-time augmentation (one view instead of six)", _set("model.tta", "none")),
    "fp32": ("bf16 autocast: float32 throughout", _set("trainer.precision", "32-true")),
    "nchw": ("channels_last memory layout", _set("model.channels_last", False)),
}


def mean_and_spread(accs: list[float]) -> str:
    return f"{100 * statistics.mean(accs):.2f} %" + (f" ± {100 * statistics.stdev(accs):.2f}" if len(accs) > 1 else "")


def variant_config(base: Config, name: str) -> Config:
    config = copy.deepcopy(base)
    VARIANTS[name][1](config)
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--target", type=float, required=True, help="test accuracy to reach, e.g. 0.94")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="variants to run (default: all)")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "cifar10"))
    parser.add_argument("--json", help="also write every measurement to this file")
    parser.add_argument("--from-epoch", type=int, default=1,
                        help="test only after this epoch and later ones (as time_to_accuracy.py's option)")
    parser.add_argument("--score", choices=["test", "val"], default="test",
                        help="val: hold out 5,000 training images and validate once, after the last epoch; the"
                             " table leads with that accuracy, the one to choose a variant on")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="changes",
                        help="settings changed in the config before each variant changes its own, e.g."
                             " trainer.max_epochs=8 (values read as YAML)")
    parser.add_argument("--keep-runs", metavar="DIR", help=time_to_accuracy.KEEP_RUNS_HELP.replace("CONFIG", "VARIANT"))
    args = parser.parse_args()
    time_to_accuracy.check_keep_runs(args.keep_runs)
    base = yaml.safe_load(Path(args.config).read_text())
    for key, value in map(parse_change, args.changes):
        _set(key, value)(base)
    if args.score == "val":
        if not _get(base, "data.val_split"):
            _set("data.val_split", 5000)(base)
        _set("trainer.check_val_every_n_epoch", int(_get(base, "trainer.max_epochs") or 1))(base)
    names = args.only or list(VARIANTS)
    runner_args = argparse.Namespace(data_dir=args.data_dir, extra=[], from_epoch=args.from_epoch,
                                     keep_runs=args.keep_runs)
    changed = "".join(f", {c}" for c in args.changes)
    print(f"config {args.config}{changed}, target {args.target:.2%}, seeds {args.seeds}, "
          f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    results: dict[str, list[dict]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for name in names:
                path = Path(tmp) / f"{name}.yaml"
                path.write_text(yaml.safe_dump(variant_config(base, name)))
                run = time_to_accuracy.run_seed(str(path), seed, runner_args)
                hit = time_to_accuracy.first_reaching(run["epochs"], args.target)
                if args.score == "val" and run["val_acc"] is None:
                    raise SystemExit(f"{name} seed {seed}: the run logged no val/acc to score on")
                results[name].append({"seed": seed, "final_test_acc": run["epochs"][-1]["test_acc"],
                                      "final_val_acc": run["val_acc"],
                                      "fit_wall_s": run["fit_wall_s"],
                                      "reached_at_s": hit["train_wall_s"] if hit else None, "epochs": run["epochs"],
                                      "kept_at": run["kept_at"]})
                if args.json:  # a 94 % variant trains for most of an hour: keep each run as it finishes
                    save(args, results)
                val = f"val {run['val_acc']:.4f}, " if run["val_acc"] is not None else ""
                print(f"  {name} seed {seed}: {val}final {run['epochs'][-1]['test_acc']:.4f}, "
                      f"fit {run['fit_wall_s']:.1f} s, "
                      f"{args.target:.2%} " + (f"at {hit['train_wall_s']:.1f} s" if hit else "not reached"), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    val_column = "final val acc (chosen on) | " if args.score == "val" else ""
    print(f"| variant | what changes | {val_column}final test acc | fit wall time | seeds reaching | time to target |")
    print("| --- | --- | ---: | ---: | ---: | ---: |" + (" ---: |" if val_column else ""))
    for name in names:
        rows = results[name]
        hits = [r["reached_at_s"] for r in rows if r["reached_at_s"] is not None]
        val = f"{mean_and_spread([r['final_val_acc'] for r in rows])} | " if val_column else ""
        reach = f"{statistics.mean(hits):.0f} s" if len(hits) == len(rows) else "–"
        print(f"| `{name}` | {VARIANTS[name][0]} | {val}{mean_and_spread([r['final_test_acc'] for r in rows])} | "
              f"{statistics.mean(r['fit_wall_s'] for r in rows):.0f} s | {len(hits)}/{len(rows)} | {reach} |")


def save(args: argparse.Namespace, results: dict[str, list[dict]]) -> None:
    """Every finished run so far, to ``--json`` (written whole: a run killed mid-write leaves the previous version)."""
    from lightning_cifar.files import atomic_write_json

    atomic_write_json(Path(args.json), {"config": args.config, "changes": args.changes, "target": args.target,
                                        "score": args.score, "results": results})


if __name__ == "__main__":
    main()
