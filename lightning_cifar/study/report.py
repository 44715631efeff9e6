"""From results.csv to summary.csv, plots and report.md.

Every number and every sentence of the report is computed here from the
results; nothing is written by hand after the fact.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, stdev
from typing import Any, Optional

from lightning_cifar.files import atomic_write_csv, atomic_write_text
from lightning_cifar.study.plan import BASELINE_AXIS
from lightning_cifar.study.stats import Estimate, difference_ci, mean_ci, slope_ci

SUMMARY_COLUMNS = ["axis", "value", "backbone", "kwargs", "n", "mean_test_acc", "std_test_acc", "ci95_low",
                   "ci95_high", "params", "flops_per_image", "mean_train_time_s", "mean_images_per_s"]
WIDTH_PARAMS = {"width_mult"}
DEPTH_PARAMS = {"blocks", "convs_per_block"}


@dataclass
class Config:
    """All seeds of one axis point."""

    axis: str
    value: Any
    backbone: str
    kwargs: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accs(self) -> list[float]:
        return [r["test_acc"] for r in self.rows]

    @property
    def acc(self) -> Estimate:
        return mean_ci(self.accs)

    @property
    def params(self) -> int:
        return self.rows[0]["params"]

    @property
    def flops(self) -> int:
        return self.rows[0]["flops_per_image"]

    @property
    def time(self) -> float:
        return mean(r["train_time_s"] for r in self.rows)

    @property
    def label(self) -> str:
        return str(self.value) if self.axis == BASELINE_AXIS else f"{self.axis}={self.value}"


def read_results(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for key in ("seed", "params", "flops_per_image", "epochs"):
            r[key] = int(r[key])
        for key in ("train_time_s", "images_per_s", "test_acc", "test_loss"):
            r[key] = float(r[key])
        r["best_val_acc"] = float(r["best_val_acc"]) if r["best_val_acc"] not in ("", "None") else None
        r["value"] = _number(r["value"])
        r["val_acc_curve"] = json.loads(r["val_acc_curve"])
    return rows


def _number(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def group(rows: list[dict[str, Any]]) -> dict[str, list[Config]]:
    """Axis name -> its configurations in value order (baselines in file order)."""
    configs: dict[tuple[str, Any], Config] = {}
    for r in rows:
        key = (r["axis"], r["value"])
        configs.setdefault(key, Config(r["axis"], r["value"], r["backbone"], r["kwargs"])).rows.append(r)
    axes: dict[str, list[Config]] = defaultdict(list)
    for (axis, _), cfg in configs.items():
        axes[axis].append(cfg)
    for axis, cfgs in axes.items():
        if axis != BASELINE_AXIS:
            cfgs.sort(key=lambda c: c.value)
    return dict(axes)


def summary_rows(axes: dict[str, list[Config]]) -> list[list[Any]]:
    rows: list[list[Any]] = [SUMMARY_COLUMNS]
    for cfgs in axes.values():
        for c in cfgs:
            est = c.acc
            rows.append([
                c.axis, c.value, c.backbone, c.kwargs, est.n, f"{est.value:.5f}",
                f"{stdev(c.accs):.5f}" if est.n > 1 else "",
                f"{est.low:.5f}" if est.low is not None else "", f"{est.high:.5f}" if est.high is not None else "",
                c.params, c.flops, f"{c.time:.1f}", f"{mean(r['images_per_s'] for r in c.rows):.0f}",
            ])
    return rows


# -- sentences ---------------------------------------------------------------------------


def pts(x: float) -> str:
    """Accuracy difference in percentage points."""
    return f"{100 * x:+.2f} points"


def ahead(x: float) -> str:
    """'2.50 points ahead' or '2.50 points behind' for a difference in accuracy."""
    return f"{100 * abs(x):.2f} points {'ahead' if x >= 0 else 'behind'}"


def ci_text(e: Estimate) -> str:
    if e.half is None:
        return "no confidence interval (fewer than 2 seeds)"
    return f"95 % CI {100 * e.low:+.2f} to {100 * e.high:+.2f}"


def pct(e: Estimate) -> str:
    return f"{100 * e.value:.2f} %" + (f" ± {100 * e.half:.2f}" if e.half is not None else "")


def human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(int(n))


def axis_param(cfgs: list[Config]) -> Optional[str]:
    kwargs = [json.loads(c.kwargs) for c in cfgs]
    keys = set().union(*kwargs) if kwargs else set()
    varying = [k for k in keys if len({json.dumps(kw.get(k)) for kw in kwargs}) > 1]
    return varying[0] if len(varying) == 1 else None


def steps_text(cfgs: list[Config]) -> list[str]:
    """Gains between neighbouring points, flagged where they are within noise or reverse."""
    lines = []
    for a, b in zip(cfgs, cfgs[1:]):
        d = difference_ci(b.accs, a.accs)
        if d.half is None:
            verdict = "single seed, no test of noise"
        elif not d.excludes_zero:
            verdict = "within noise (the CI includes 0)"
        elif d.value < 0:
            verdict = "a significant loss: the gain reverses here"
        else:
            verdict = "significant"
        lines.append(f"- {a.value} → {b.value}: {pts(d.value)} ({ci_text(d)}); {verdict}.")
    return lines


def saturation_text(cfgs: list[Config], what: str) -> str:
    for a, b in zip(cfgs, cfgs[1:]):
        d = difference_ci(b.accs, a.accs)
        if d.half is not None and (not d.excludes_zero or d.value < 0):
            kind = "reverses" if d.value < 0 and d.excludes_zero else "stops being distinguishable from noise"
            return f"The gain from more {what} {kind} from {a.value} to {b.value}."
    if any(difference_ci(b.accs, a.accs).half is None for a, b in zip(cfgs, cfgs[1:])):
        return "With a single seed per point the study cannot tell where the gains saturate."
    return f"Every step to more {what} in this range is a significant gain: no saturation within the range tried."


def axis_answer(axis: str, cfgs: list[Config]) -> list[str]:
    param = axis_param(cfgs)
    x = [c.value for c in cfgs for _ in c.rows]
    y = [acc for c in cfgs for acc in c.accs]
    lines = []
    if len(cfgs) < 2 or not all(isinstance(v, (int, float)) for v in x):
        return [f"Axis `{axis}` has fewer than two numeric points; no trend is computed."]
    if param in WIDTH_PARAMS:
        slope = slope_ci([math.log2(v) for v in x], y)
        lines.append(f"Each doubling of the width (`{param}`) changes test accuracy by {pts(slope.value)} on "
                     f"average ({ci_text(slope)}; least-squares fit over {slope.n} runs, {cfgs[0].value} to "
                     f"{cfgs[-1].value}).")
        what = "width"
    else:
        slope = slope_ci(x, y)
        unit = {"blocks": "added conv-pool block", "convs_per_block": "added convolution per block"}.get(
            param or "", f"unit of `{param or axis}`")
        lines.append(f"Each {unit} changes test accuracy by {pts(slope.value)} on average ({ci_text(slope)}; "
                     f"least-squares fit over {slope.n} runs, {cfgs[0].value} to {cfgs[-1].value}).")
        what = "depth" if param in DEPTH_PARAMS else str(param or axis)
    best = max(cfgs, key=lambda c: c.acc.value)
    lines.append(f"The best point is {best.label} at {pct(best.acc)} ({human(best.params)} parameters). "
                 f"{saturation_text(cfgs, what)}")
    lines.append("Step by step:")
    lines += steps_text(cfgs)
    return lines


def comparison_answer(axes: dict[str, list[Config]]) -> list[str]:
    baselines = axes.get(BASELINE_AXIS, [])
    cnns = [c for axis, cfgs in axes.items() if axis != BASELINE_AXIS for c in cfgs]
    if not baselines or not cnns:
        return ["The study has no baseline or no CNN axis, so there is no comparison."]
    lines = []
    best_cnn = max(cnns, key=lambda c: c.acc.value)
    for b in baselines:
        near_params = min(cnns, key=lambda c: abs(math.log(c.params) - math.log(b.params)))
        near_time = min(cnns, key=lambda c: abs(c.time - b.time))
        for kind, cnn in (("parameter count", near_params), ("training time", near_time)):
            d = difference_ci(cnn.accs, b.accs)
            noise = "" if d.half is None or d.excludes_zero else " This difference is within noise."
            lines.append(
                f"- `{b.value}` ({human(b.params)} parameters, {b.time:.0f} s, {pct(b.acc)}) against the CNN closest "
                f"in {kind}, {cnn.label} ({human(cnn.params)} parameters, {cnn.time:.0f} s, {pct(cnn.acc)}): the CNN "
                f"is {ahead(d.value)} ({ci_text(d)}).{noise}")
        d = difference_ci(best_cnn.accs, b.accs)
        lines.append(f"- The best CNN ({best_cnn.label}, {pct(best_cnn.acc)}) against `{b.value}`: "
                     f"{ahead(d.value)} ({ci_text(d)}).")
    return lines


# -- plots ---------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _axis_plot(ax, cfgs: list[Config], log2: bool) -> None:
    xs = [c.value for c in cfgs]
    means = [100 * c.acc.value for c in cfgs]
    errs = [100 * (c.acc.half or 0.0) for c in cfgs]
    ax.errorbar(xs, means, yerr=errs, fmt="o-", capsize=4, color="tab:blue", label="mean, 95 % CI")
    for c in cfgs:
        ax.scatter([c.value] * len(c.accs), [100 * a for a in c.accs], s=14, color="tab:gray", alpha=0.7, zorder=3)
    ax.scatter([], [], s=14, color="tab:gray", label="single seeds")
    if log2:
        ax.set_xscale("log", base=2)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{v}\n{human(c.params)} params" for v, c in zip(xs, cfgs)], fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def is_width_axis(cfgs: list[Config]) -> bool:
    return axis_param(cfgs) in WIDTH_PARAMS


def plot_axes(axes: dict[str, list[Config]], path: Path, width: bool) -> bool:
    """width.png (``width=True``) or depth.png: one panel per axis of that kind."""
    chosen = [(a, c) for a, c in axes.items() if a != BASELINE_AXIS and is_width_axis(c) == width]
    if not chosen:
        return False
    plt = _plt()
    fig, subplots = plt.subplots(1, len(chosen), figsize=(6.5 * len(chosen), 4.5), squeeze=False)
    for ax, (name, cfgs) in zip(subplots[0], chosen):
        _axis_plot(ax, cfgs, log2=width)
        if width:
            ax.set_xlabel(f"{axis_param(cfgs)} (filters x this; log scale)")
            ax.set_title(f"Width: test accuracy vs. filters ({name})")
        else:
            ax.set_xlabel(axis_param(cfgs) or name)
            ax.set_title(f"Depth: {name}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_cnn_vs_mlp(axes: dict[str, list[Config]], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    markers = iter("os^Dv<>")
    for axis, cfgs in axes.items():
        is_base = axis == BASELINE_AXIS
        ax.errorbar([c.params for c in cfgs], [100 * c.acc.value for c in cfgs],
                    yerr=[100 * (c.acc.half or 0) for c in cfgs], fmt="*" if is_base else next(markers) + "-",
                    markersize=11 if is_base else 6, capsize=3, label="baselines" if is_base else f"CNN: {axis}",
                    color="tab:red" if is_base else None)
        if is_base:
            for c in cfgs:
                ax.annotate(str(c.value), (c.params, 100 * c.acc.value), textcoords="offset points",
                            xytext=(6, -12), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("CNN vs. fully connected: accuracy against size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(axes: dict[str, list[Config]], path: Path) -> None:
    plt = _plt()
    fig, subplots = plt.subplots(1, len(axes), figsize=(5 * len(axes), 4), squeeze=False)
    for ax, (axis, cfgs) in zip(subplots[0], axes.items()):
        for c in cfgs:
            curves = [r["val_acc_curve"] for r in c.rows if r["val_acc_curve"]]
            if not curves:
                continue
            n = min(len(cv) for cv in curves)
            avg = [100 * mean(cv[i] for cv in curves) for i in range(n)]
            ax.plot(range(1, n + 1), avg, marker=".", label=str(c.value))
        ax.set_title(f"{axis}: validation accuracy")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("val accuracy (%), mean of seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title=axis_param(cfgs) or axis, title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- report ----------------------------------------------------------------------------------


def table(cfgs: list[Config]) -> list[str]:
    lines = ["| point | backbone | kwargs | seeds | test accuracy (mean ± 95 % CI) | params | FLOPs/image | train s |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for c in cfgs:
        lines.append(f"| {c.value} | `{c.backbone}` | `{c.kwargs}` | {c.acc.n} | {pct(c.acc)} | {c.params:,} | "
                     f"{human(c.flops)} | {c.time:.0f} |")
    return lines


def write_report(out: Path, environment: Optional[dict[str, Any]] = None, command: str = "") -> Path:
    """Summary, plots and report.md from ``out/results.csv``."""
    rows = read_results(out / "results.csv")
    if not rows:
        raise ValueError(f"{out / 'results.csv'} has no results yet")
    env = environment or {}
    order = [name for name in env.get("axes", "").split(",") if name]  # the config's order
    axes = dict(sorted(group(rows).items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))
    atomic_write_csv(out / "summary.csv", summary_rows(axes))
    plots = {"width": plot_axes(axes, out / "width.png", width=True),
             "depth": plot_axes(axes, out / "depth.png", width=False)}
    plot_cnn_vs_mlp(axes, out / "cnn_vs_mlp.png")
    plot_curves(axes, out / "curves.png")

    unique = {r["run_id"]: r for r in rows}
    total = sum(r["train_time_s"] for r in unique.values())
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"# Study: {env.get('name', out.name)}", ""]
    if command:
        lines += ["Reproduce with:", "", "```bash", command, "```", ""]
    lines += ["## Setup", ""]
    for key in ("hardware", "software", "data"):
        if key in env:
            lines.append(f"- {key}: {env[key]}")
    lines += [f"- seeds: {', '.join(map(str, seeds))} ({len(unique)} training runs, "
              f"{total / 60:.1f} minutes of training in all)",
              f"- epochs per run: {', '.join(sorted({str(r['epochs']) for r in rows}))}"]
    if "recipe" in env:
        lines += ["- recipe (held fixed for every run):", "", "```yaml", env["recipe"].rstrip(), "```"]
    lines += ["", "Test accuracy is on the official 10,000 test images; the 95 % confidence intervals use the "
              "t distribution over seeds; differences between two points use Welch's t-interval; trends are "
              "least-squares slopes over all runs of an axis. A difference is called within noise when its "
              "95 % interval includes zero.", ""]
    for axis, cfgs in axes.items():
        if axis == BASELINE_AXIS:
            continue
        kind = "Width" if is_width_axis(cfgs) else "Depth"
        lines += [f"## {kind}: axis `{axis}`", "", *table(cfgs), "", *axis_answer(axis, cfgs), ""]
        if kind == "Width" and plots["width"]:
            lines += ["![width](width.png)", ""]
        if kind == "Depth" and plots["depth"]:
            lines += ["![depth](depth.png)", ""]
    lines += ["## CNN vs. fully connected", ""]
    if BASELINE_AXIS in axes:
        lines += [*table(axes[BASELINE_AXIS]), ""]
    lines += [*comparison_answer(axes), "", "![cnn vs mlp](cnn_vs_mlp.png)", "",
              "## Learning curves", "", "![curves](curves.png)", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path

