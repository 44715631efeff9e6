"""From the runs' results to summary.csv, plots and report.md.

Every number and every sentence of the report is computed here from the result files and the
saved test predictions; nothing is written by hand after the fact. Differences between two
configurations are paired over the same 10,000 test images (bootstrap over images and seeds);
the step tests of the axes are corrected for multiplicity with Holm's method.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, stdev
from typing import Any, Optional

import numpy as np

from lightning_cifar.files import atomic_write_bytes, atomic_write_csv, atomic_write_text
from lightning_cifar.study.config import CNN_FAMILY, Axis, StudyConfig
from lightning_cifar.study.plan import ANCHOR_AXIS, BASELINE_AXIS, BUDGET_AXIS, Run, base_key, choose, tune_label
from lightning_cifar.study.runner import PREDICTIONS, RESULT_VERSION, TEST_LABELS, load_results
from lightning_cifar.study.stats import (
    ALPHA,
    BOOTSTRAP_RESAMPLES,
    EQUAL,
    EQUIVALENCE_MARGIN,
    GAIN,
    LOSS,
    RULE,
    Comparison,
    Estimate,
    Judgement,
    judge,
    line_with_lack_of_fit,
    mean_ci,
    paired_bootstrap,
    paired_contrast,
    prediction_half_width,
    sampling_half_width,
)

SUMMARY_COLUMNS = ["axis", "value", "role", "family", "backbone", "kernels", "n", "mean_test_acc", "std_test_acc",
                   "ci95_low", "ci95_high", "test_set_half_width", "mean_train_acc", "mean_val_acc", "params",
                   "flops_per_image", "receptive_field", "final_map", "mean_train_time_s"]
# One colour per network family in every plot: the base network always black.
BASE_COLOUR = "black"
AXIS_COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
BASELINE_COLOUR = "tab:red"
PANELS_PER_ROW = 4
TICK_GAP = 0.12  # the smallest distance between two labelled ticks, as a share of the panel's x-range


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@dataclass
class Group:
    """Every seed of one configuration at one point (an axis value, a baseline, an anchor, ...)."""

    axis: str
    value: Any
    results: list[dict[str, Any]] = field(default_factory=list)
    correct: Optional[np.ndarray] = None  # seeds x test images

    base: bool = False  # the base network: it lies on several axes

    @property
    def label(self) -> str:
        if self.base:
            return "the base network"
        return str(self.value) if self.axis in (BASELINE_AXIS, ANCHOR_AXIS, BUDGET_AXIS) else f"{self.axis}={self.value}"

    @property
    def accs(self) -> list[float]:
        return [r["test_acc"] for r in self.results]

    @property
    def acc(self) -> Estimate:
        return mean_ci(self.accs)

    def mean_of(self, key: str) -> Optional[float]:
        values = [r[key] for r in self.results if r.get(key) is not None]
        return mean(values) if values else None

    def first(self, key: str) -> Any:
        return self.results[0].get(key)

    @property
    def run_ids(self) -> set[str]:
        return {r["run_id"] for r in self.results}


class Results:
    """The finished runs of a study's plan, grouped by the points the plan gives them, with their test
    predictions. (The points come from the plan, not from the result files: a run trained while tuning
    was pending may serve fewer points once the winner is known.)"""

    def __init__(self, out: Path, plan: list[Run]) -> None:
        self.out = out
        found = {r["run_id"]: r for r in load_results(out) if r.get("version") == RESULT_VERSION}
        self.all = [found[run.run_id] for run in plan if run.run_id in found]
        labels_path = out / TEST_LABELS
        self.labels = np.load(labels_path) if labels_path.is_file() else None
        self.groups: dict[tuple[str, str], Group] = {}
        for run in plan:
            result = found.get(run.run_id)
            if result is None:
                continue
            for p in run.points:
                group = self.groups.setdefault((p.axis, canonical(p.value)), Group(p.axis, p.value))
                if result["run_id"] not in group.run_ids:
                    group.results.append(result)
        for group in self.groups.values():
            group.results.sort(key=lambda r: r["seed"])

    def group(self, axis: str, value: Any) -> Optional[Group]:
        return self.groups.get((axis, canonical(value)))

    def correct(self, group: Group) -> np.ndarray:
        if group.correct is None:
            if self.labels is None:
                raise ValueError(f"{self.out / TEST_LABELS} is missing: no paired comparisons without it")
            rows = [np.load(self.out / "runs" / r["run_id"] / PREDICTIONS) == self.labels for r in group.results]
            group.correct = np.stack(rows)
        return group.correct

    def compare(self, a: Group, b: Group) -> Comparison:
        return paired_bootstrap(self.correct(a), self.correct(b))

    def step_change(self, a: Group, b: Group, c: Group) -> Comparison:
        """How the step b → c differs from the step a → b: (c - b) - (b - a)."""
        return paired_contrast([self.correct(c), self.correct(b), self.correct(a)], [1.0, -2.0, 1.0])


# -- numbers as text -------------------------------------------------------------------------


def pts(x: float) -> str:
    return f"{100 * x:+.2f} points"


def ahead(x: float) -> str:
    """'2.50 points ahead' or '2.50 points behind' for a difference in accuracy."""
    return f"{100 * abs(x):.2f} points {'ahead' if x >= 0 else 'behind'}"


def pct(e: Estimate) -> str:
    return f"{100 * e.value:.2f} %" + (f" ± {100 * e.half:.2f}" if e.half is not None else "")


def interval(c: Comparison) -> str:
    return f"95 % CI {100 * c.low:+.2f} to {100 * c.high:+.2f}"


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def human(n: Optional[float]) -> str:
    if n is None:
        return "–"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(int(n))


def adjusted(p: float, at_floor: bool) -> str:
    # No resample crossed the line: the raw p is only known to be under the bootstrap's resolution, and Holm's
    # multiplied value an upper bound, not an estimate.
    return f"{'≤' if at_floor else '='} {p:.3f}"


def word_text(j: Judgement, gain: str = "a gain", loss: str = "a loss") -> str:
    """The word the rule gives a comparison, with the Holm-adjusted p-value behind it."""
    c = j.comparison
    difference = f"Holm-adjusted p {adjusted(j.adjusted_p, c.p_at_floor)}"
    margin = f"±{100 * EQUIVALENCE_MARGIN:g} point"
    if j.word in (GAIN, LOSS):
        return f"{gain if j.word == GAIN else loss} ({difference})"
    equivalence = f"Holm-adjusted p {adjusted(j.adjusted_equivalence_p, j.adjusted_equivalence_p <= c.p_floor)}"
    if j.word == EQUAL:
        return f"equal within {margin} (two one-sided tests, {equivalence})"
    return f"not resolved ({difference}; equal within {margin} not shown either, {equivalence})"


# -- the pieces of the report ----------------------------------------------------------------


def axis_groups(results: Results, axis: Axis) -> list[Group]:
    groups = [results.group(axis.name, p.value) for p in axis.points]
    return [g for g in groups if g is not None and g.results]


def _fraction(value: Optional[float]) -> str:
    return f"{value:.5f}" if value is not None else ""  # empty: not measured (a run without validation)


def point_table(results: Results, groups: list[Group]) -> list[str]:
    n_images = len(results.labels) if results.labels is not None else 10_000
    lines = ["| point | kernels | params | FLOPs/image | receptive field | final map | seeds | test acc (mean ± seed CI) "
             "| ± test-set error | train acc | val acc | train s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for g in groups:
        rf, fm = g.first("receptive_field"), g.first("final_map")
        train, val = g.mean_of("train_acc"), g.mean_of("val_acc")
        lines.append(
            f"| {g.value} | {g.first('kernels') or '–'} | {g.first('params'):,} | {human(g.first('flops_per_image'))} "
            f"| {rf if rf is not None else '–'} | {f'{fm}x{fm}' if fm is not None else '–'} | {len(g.results)} "
            f"| {pct(g.acc)} | {100 * sampling_half_width(g.acc.value, n_images):.2f} "
            f"| {f'{100 * train:.2f} %' if train is not None else '–'} | {f'{100 * val:.2f} %' if val is not None else '–'} "
            f"| {mean(r['train_time_s'] for r in g.results):.0f} |")
    return lines


@dataclass
class Step:
    axis: str
    a: Group
    b: Group
    comparison: Comparison
    judgement: Optional[Judgement] = None  # set once the whole family of steps is known


def axis_steps(results: Results, axis: Axis, groups: list[Group]) -> list[Step]:
    """Neighbouring points (ordered axes) or each point against the first (categorical axes)."""
    if axis.scale == "categorical":
        pairs = [(groups[0], g) for g in groups[1:]]
    else:
        pairs = list(zip(groups, groups[1:]))
    return [Step(axis.name, a, b, results.compare(b, a)) for a, b in pairs]


@dataclass
class StepChange:
    """How one step of an ordered axis differs from the step before it: do the gains shrink?"""

    axis: str
    a: Group
    b: Group
    c: Group
    comparison: Comparison
    judgement: Optional[Judgement] = None


def step_changes(results: Results, axis: Axis, groups: list[Group]) -> list[StepChange]:
    """Each pair of neighbouring steps of the same size on the axis's scale (a doubling and a doubling; width 2 to
    2.25 is no step to set against 1 to 2)."""
    if axis.scale == "categorical":
        return []
    position = (lambda v: math.log2(v)) if axis.scale == "log2" else (lambda v: float(v))
    return [StepChange(axis.name, a, b, c, results.step_change(a, b, c))
            for a, b, c in zip(groups, groups[1:], groups[2:])
            if math.isclose(position(c.value) - position(b.value), position(b.value) - position(a.value), rel_tol=1e-6)]


def judged(items: list[Any]) -> list[Any]:
    """Each item's ``judgement`` set by the rule, the items forming one family of tests."""
    for item, j in zip(items, judge([item.comparison for item in items])):
        item.judgement = j
    return items


def fit_sentence(axis: Axis, groups: list[Group]) -> Optional[str]:
    if axis.scale == "categorical" or len(groups) < 3:
        return None
    transform = (lambda v: math.log2(v)) if axis.scale == "log2" else (lambda v: float(v))
    x = [transform(g.value) for g in groups for _ in g.results]
    y = [acc for g in groups for acc in g.accs]
    fit = line_with_lack_of_fit(x, y)
    unit = "doubling of" if axis.scale == "log2" else "unit of"
    text = (f"A straight line through all {len(y)} runs gives {pts(fit.slope.value)} per {unit} `{axis.param}`"
            + (f" (t-interval ±{100 * fit.slope.half:.2f})" if fit.slope.half is not None else ""))
    if fit.lack_of_fit_p is None:
        return text + "; with one seed per point its fit cannot be tested."
    if fit.lack_of_fit_p < ALPHA:
        return (text + f", but the points do not lie on a line (lack-of-fit F test {p_text(fit.lack_of_fit_p)}): "
                "the steps above, not this average, describe the axis.")
    return text + f"; a line fits the points (lack-of-fit F test {p_text(fit.lack_of_fit_p)})."


def ratio_text(b: Group, a: Group, key: str, name: str) -> Optional[str]:
    ratio = b.first(key) / a.first(key)
    return None if 1 / 1.1 <= ratio <= 1.1 else f"{ratio:.2f}x the {name}"


def also_changed(a: Group, b: Group) -> str:
    """What else a kernels step changes: parameters and FLOPs that differ by more than 10 %."""
    parts = [t for t in (ratio_text(b, a, "params", "parameters"), ratio_text(b, a, "flops_per_image", "FLOPs")) if t]
    return f"; {b.value} has {spoken_list(parts)} of {a.value}" if parts else ""


def step_lines(steps: list[Step], kind: str = "") -> list[str]:
    return [f"- {s.a.value} → {s.b.value}: {pts(s.comparison.value)} ({interval(s.comparison)}"
            f"{also_changed(s.a, s.b) if kind == 'kernels' else ''}): {word_text(s.judgement)}." for s in steps]


def step_change_lines(changes: list[StepChange]) -> list[str]:
    return [f"- {c.b.value} → {c.c.value} against {c.a.value} → {c.b.value}: {pts(c.comparison.value)} "
            f"({interval(c.comparison)}): "
            f"{word_text(c.judgement, 'the later step is larger', 'the later step is smaller')}."
            for c in changes]


def pooling_stages(g: Group) -> Optional[int]:
    final = g.first("final_map")
    return None if not final else round(math.log2(32 / final))


@dataclass
class Pair:
    """A deeper network against the wider network closest to it in FLOPs."""

    deeper: Group
    wider: Group
    comparison: Comparison
    judgement: Optional[Judgement] = None


def matched_pairs(results: Results, study: StudyConfig, by_axis: dict[str, list[Group]]) -> list[Pair]:
    """Each depth point against the width point closest to it in FLOPs (within 1.5x)."""
    widths = [g for a in study.axes if a.kind == "width" for g in by_axis.get(a.name, [])]
    pairs = []
    for axis in (a for a in study.axes if a.kind == "depth"):
        for g in by_axis.get(axis.name, []):
            if not widths:
                break
            w = min(widths, key=lambda c: abs(math.log(c.first("flops_per_image") / g.first("flops_per_image"))))
            ratio = w.first("flops_per_image") / g.first("flops_per_image")
            if w.run_ids == g.run_ids or not 1 / 1.5 <= ratio <= 1.5:
                continue
            pairs.append(Pair(g, w, results.compare(g, w)))
    return judged(pairs)


def side(g: Group) -> str:
    return (f"{g.label}, {human(g.first('flops_per_image'))} FLOPs, {human(g.first('params'))} parameters, "
            f"{pct(g.acc)}")


def matched_compute(pairs: list[Pair]) -> list[str]:
    lines = []
    for pair in pairs:
        g, w, c = pair.deeper, pair.wider, pair.comparison
        ratio = g.first("flops_per_image") / w.first("flops_per_image")
        stages, wide_stages = pooling_stages(g), pooling_stages(w)
        pooling = ""
        if stages != wide_stages and stages is not None and wide_stages is not None:
            pooling = (f" The deeper network has {stages} pooling stage{'s' if stages != 1 else ''} (receptive field "
                       f"{g.first('receptive_field')} pixels) against {wide_stages} ({w.first('receptive_field')} "
                       "pixels): this pair compares pooling stages as much as depth.")
        lines.append(
            f"- Deeper ({side(g)}) against wider ({side(w)}); the deeper network has {ratio:.2f}x the wider one's "
            f"FLOPs: deeper is {ahead(c.value)} ({interval(c)}): "
            f"{word_text(pair.judgement, 'a gain for depth', 'a loss for depth')}.{pooling}")
    return lines or ["No depth point has a width point within 1.5x of its FLOPs."]


def best_by_validation(groups: list[Group]) -> Group:
    """Chosen on the validation split, never the test set."""
    return max(groups, key=lambda g: g.mean_of("val_acc") or 0.0)


def spoken_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


@dataclass
class Versus:
    """A fully connected network against a CNN, and the roles that CNN plays (base, closest in parameters, best)."""

    mlp: Group
    cnn: Group
    roles: list[str]
    comparison: Comparison
    judgement: Optional[Judgement] = None


def cnn_vs_mlp(results: Results, baselines: list[Group], cnns: list[Group], base: Optional[Group]) -> list[str]:
    """Each fully connected network against the base CNN, the CNN closest to it in parameters and the best
    CNN by validation accuracy; one line per distinct CNN, naming every role it plays."""
    if not baselines or not cnns:
        return ["The study has no baseline or no CNN point, so there is no comparison."]
    best_cnn, best_mlp = best_by_validation(cnns), best_by_validation(baselines)
    pairs = []
    for b in baselines:
        near = min(cnns, key=lambda c: abs(math.log(c.first("params") / b.first("params"))))
        roles: dict[frozenset[str], tuple[Group, list[str]]] = {}
        for what, cnn in (("the base CNN", base), ("the CNN closest in parameters", near),
                          ("the best CNN by validation accuracy", best_cnn)):
            if cnn is not None:
                roles.setdefault(frozenset(cnn.run_ids), (cnn, []))[1].append(what)
        pairs += [Versus(b, cnn, what, results.compare(cnn, b)) for cnn, what in roles.values()]
    lines = []
    for v in judged(pairs):
        b, cnn, c = v.mlp, v.cnn, v.comparison
        lines.append(f"- `{b.value}` ({human(b.first('params'))} parameters, {pct(b.acc)}) against {cnn.label} "
                     f"({human(cnn.first('params'))} parameters, {pct(cnn.acc)}; {spoken_list(v.roles)}): the CNN "
                     f"is {ahead(c.value)} ({interval(c)}): "
                     f"{word_text(v.judgement, 'a gain for the CNN', 'a loss for the CNN')}.")
    lines.append(f"- The best fully connected network by validation accuracy is `{best_mlp.value}`.")
    return lines


def tuning_table(tunes: Any, tuning: Any, heading: str) -> list[str]:
    lines = []
    for tune in tunes:
        rows = tuning.table.get(tune.family, [])
        winner = tuning.winners.get(tune.family)
        lines += [f"### `{tune.family}`{heading}", "", "| settings | val acc per seed | mean |", "| --- | --- | ---: |"]
        for row in rows:
            mark = "**" if row["settings"] == winner else ""
            scores = ", ".join(f"{100 * s:.2f}" for s in row["val_acc"]) or "not run yet"
            mean_text = f"{100 * row['mean_val_acc']:.2f} %" if row["mean_val_acc"] is not None else "–"
            lines.append(f"| {mark}{row['label']}{mark} | {scores} | {mark}{mean_text}{mark} |")
        lines.append("")
    return lines


def tuning_section(results: Results, study: StudyConfig) -> list[str]:
    longer = study.budget.tune if study.budget else ()
    if not study.tune and not longer:
        return []
    tuning = choose(study, {r["run_id"]: r for r in results.all})
    lines = ["## Recipes chosen on the validation split", "",
             "Each family's settings below were chosen by the mean final validation accuracy over the tuning seeds, "
             "at the study's budget; the test set played no part. The winner is used by every run of the family "
             "(the `cnn` family: the base network and every axis point).", ""]
    lines += tuning_table(study.tune, tuning, "")
    if longer:
        lines += [f"At {study.budget.multiplier}x the epochs the budget check chooses again, the same way, for the "
                  "families below; its runs of these families use the winner there.", ""]
        lines += tuning_table(longer, tuning.budget, f" at {study.budget.multiplier}x the epochs")
    return lines


@dataclass
class BudgetPair:
    """Two budget points compared at the study's budget and at the longer one."""

    a: str
    b: str
    short: Comparison
    long: Comparison


def budget_section(results: Results, study: StudyConfig,
                   main_group: dict[str, Group]) -> tuple[list[str], list[str]]:
    """The section, and its lines on which differences hold at both budgets (the answers repeat them). Every
    comparison of the section (each point's change with the epochs, each pair at each budget) is one family."""
    if study.budget is None:
        return [], []
    multiplier = study.budget.multiplier
    tuning = choose(study, {r["run_id"]: r for r in results.all})
    chosen = [f"`{t.family}` {tune_label(tuning.budget.winners[t.family])}" for t in study.budget.tune
              if t.family in tuning.budget.winners]
    recipe = (f", each family with its recipe chosen again at that budget on the validation split "
              f"({'; '.join(chosen)})" if chosen else "")
    lines = ["## The budget check", "",
             f"These points were trained again at {multiplier}x the epochs "
             f"(seeds {', '.join(map(str, study.budget.seeds))}){recipe}.", "",
             "| point | study budget | longer budget | change |", "| --- | ---: | ---: | ---: |"]
    long_groups, changes = {}, []
    baselines = {b.label for b in study.baselines}
    waiting = {label for label in study.budget.points
               if (label if label in baselines else CNN_FAMILY) in tuning.budget.pending}
    for label in study.budget.points:
        short, long = main_group.get(label), results.group(BUDGET_AXIS, label)
        if short is None or long is None or label in waiting:
            continue  # listed below: not run yet, or its recipe at this budget not chosen yet
        long_groups[label] = long
        changes.append((label, short, long, results.compare(long, short)))
    labels = list(long_groups)
    pairs = [BudgetPair(a, b, results.compare(main_group[a], main_group[b]), results.compare(long_groups[a],
                                                                                            long_groups[b]))
             for i, a in enumerate(labels) for b in labels[i + 1:]]
    verdicts = judge([c for *_, c in changes] + [c for p in pairs for c in (p.short, p.long)])
    for (label, short, long, c), j in zip(changes, verdicts):
        lines.append(f"| {label} | {pct(short.acc)} | {pct(long.acc)} | {pts(c.value)} ({interval(c)}):"
                     f" {word_text(j)} |")
    for label in study.budget.points:
        if label not in long_groups:
            short = main_group.get(label)
            later = f"recipe at {multiplier}x not chosen yet" if label in waiting else "not run yet"
            lines.append(f"| {label} | {pct(short.acc) if short is not None else 'not run yet'} | {later} | – |")
    lines.append("")
    held = []
    rest = verdicts[len(changes):]
    for pair, short_j, long_j in zip(pairs, rest[0::2], rest[1::2]):
        held.append(f"- {pair.a} against {pair.b}: {pts(pair.short.value)} ({interval(pair.short)}) at the study's "
                    f"budget, {pts(pair.long.value)} ({interval(pair.long)}) at {multiplier}x: "
                    f"{budget_verdict(short_j, long_j, multiplier)}.")
    if held:
        lines += [f"Which differences between these points hold at both budgets ({len(verdicts)} tests, one Holm "
                  "family with the changes above):", "", *held, ""]
    return lines, held


def budget_verdict(short: Judgement, long: Judgement, multiplier: float) -> str:
    """Whether a difference seen at the study's budget is seen, with the same sign, at the longer one (by the rule)."""
    def said(j: Judgement) -> str:
        return {GAIN: "a gain", LOSS: "a loss", EQUAL: "equal within ±1 point"}.get(j.word, "not resolved")

    if short.resolved and long.resolved:
        return "holds at both budgets" if short.word == long.word else "reversed at the longer budget"
    return f"{said(short)} at the study's budget, {said(long)} at {multiplier}x"


def anchor_section(results: Results, study: StudyConfig) -> list[str]:
    if not study.anchors:
        return []
    lines = ["## The seed notebook as anchor", "",
             "Trained exactly as their config files say (not tuned), test accuracy after the last epoch. The notebook "
             "reports one run; the yardstick for one run is our recipe's 95 % prediction interval for a single run "
             "(t, from our seeds), not the interval of our mean. With three seeds both are wide: the seeds' spread is "
             "itself barely known.", "",
             "| anchor | config | seeds | test acc (mean ± seed CI) | seeds' range | one run (95 % prediction) "
             "| notebook reported | reading |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for anchor in study.anchors:
        g = results.group(ANCHOR_AXIS, anchor.label)
        if g is None:
            lines.append(f"| {anchor.label} | `{anchor.config}` | 0 | not run yet | – | – | – | – |")
            continue
        reported = f"{100 * anchor.reported:.2f} %" if anchor.reported is not None else "–"
        spread = f"{100 * min(g.accs):.2f} to {100 * max(g.accs):.2f} %"
        half = prediction_half_width(g.accs)
        one_run = "–" if half is None else f"{100 * (g.acc.value - half):.2f} to {100 * (g.acc.value + half):.2f} %"
        lines.append(f"| {anchor.label} | `{anchor.config}` | {len(g.results)} | {pct(g.acc)} | {spread} | {one_run} "
                     f"| {reported} | {anchor_reading(g.accs, anchor.reported)} |")
    return lines + [""]


def anchor_reading(accs: list[float], reported: Optional[float]) -> str:
    """Whether the notebook's one run is a plausible run of our recipe, and where it lies among our seeds."""
    half = prediction_half_width(accs)
    if reported is None:
        return "–"
    if half is None:
        return "one seed: no interval to compare with"
    centre = mean(accs)
    among = ("within our seeds' range" if min(accs) <= reported <= max(accs)
             else f"{'above' if reported > max(accs) else 'below'} all {len(accs)} of our seeds")
    if abs(reported - centre) <= half:
        return f"consistent: inside the prediction interval, {among}"
    return f"not consistent: {'above' if reported > centre else 'below'} the prediction interval"


def answers(study: StudyConfig, steps: dict[str, list[Step]], changes: dict[str, list[StepChange]],
            by_axis: dict[str, list[Group]], matched: list[str], versus: list[str], held: list[str]) -> list[str]:
    """The headline: every axis step with its interval and the word the rule gives it, how the steps change, the
    line fit; width against depth at matched compute; the CNN against the MLPs; what the budget check kept."""
    lines = ["## Answers", "", "Each step: the change in test accuracy, its 95 % interval, and the word the rule "
             "above gives it (details in the sections below).", ""]
    for axis in study.axes:
        if not steps.get(axis.name):
            continue
        parts = [f"{s.a.value} → {s.b.value}: {pts(s.comparison.value)} ({100 * s.comparison.low:+.2f} to "
                 f"{100 * s.comparison.high:+.2f}{also_changed(s.a, s.b) if axis.kind == 'kernels' else ''}; "
                 f"{s.judgement.word})" for s in steps[axis.name]]
        lines.append(f"- **{axis.name}** ({axis.kind}, `{axis.param.replace('model.backbone_kwargs.', '')}`): "
                     + "; ".join(parts) + ".")
        if changes.get(axis.name):
            said = {GAIN: "larger", LOSS: "smaller", EQUAL: "equal within ±1 point"}
            parts = [f"{c.b.value} → {c.c.value} against the step before: {pts(c.comparison.value)} "
                     f"({100 * c.comparison.low:+.2f} to {100 * c.comparison.high:+.2f}; "
                     f"{said.get(c.judgement.word, c.judgement.word)})" for c in changes[axis.name]]
            lines.append("  How the steps change: " + "; ".join(parts) + ".")
        sentence = fit_sentence(axis, by_axis[axis.name])
        if sentence:
            lines.append(f"  {sentence}")
    lines += ["", "Width or depth at matched compute:", "", *matched, "", "CNN against fully connected (each family "
              "with its own recipe, chosen on the validation split):", "", *versus]
    if held:
        lines += ["", f"At {study.budget.multiplier}x the epochs:", "", *held]
    return lines + [""]


def fitting_section(groups: list[Group]) -> list[str]:
    lines = ["## Under- or over-fitting", "",
             "Accuracy on a fixed subset of 5,000 training images, scored clean (no augmentation) in eval mode after "
             "the last epoch, next to validation and test accuracy. A large train-test gap means over-fitting; "
             "low train accuracy, under-fitting.", "",
             "| point | train acc | val acc | test acc | train - test |", "| --- | ---: | ---: | ---: | ---: |"]
    seen: set[frozenset[str]] = set()
    for g in groups:
        train, val = g.mean_of("train_acc"), g.mean_of("val_acc")
        if train is None or frozenset(g.run_ids) in seen:  # the base network lies on several axes
            continue
        seen.add(frozenset(g.run_ids))
        val_text = f"{100 * val:.2f} %" if val is not None else "– (no validation)"
        lines.append(f"| {g.label} | {100 * train:.2f} % | {val_text} | {100 * g.acc.value:.2f} % "
                     f"| {100 * (train - g.acc.value):+.2f} |")
    return lines + [""]


# -- plots -------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def shade(colour: str, strength: float) -> tuple[float, float, float]:
    """``colour`` mixed with white: ``strength`` 1 is the colour itself, smaller is lighter."""
    from matplotlib.colors import to_rgb

    return tuple(1 - strength * (1 - c) for c in to_rgb(colour))  # type: ignore[return-value]


def colours(study: StudyConfig) -> dict[str, str]:
    return {axis.name: AXIS_COLOURS[i % len(AXIS_COLOURS)] for i, axis in enumerate(study.axes)}


def plot_axes(by_axis: dict[str, list[Group]], study: StudyConfig, base: Optional[str], path: Path) -> None:
    """One panel per axis, the same y-range in all, the base network black in every panel."""
    plt = _plt()
    axes = [a for a in study.axes if by_axis.get(a.name)]
    if not axes:
        return
    all_accs = [100 * acc for a in axes for g in by_axis[a.name] for acc in g.accs]
    low, high = math.floor(min(all_accs) - 1), math.ceil(max(all_accs) + 1)
    columns = min(PANELS_PER_ROW, len(axes))
    rows = math.ceil(len(axes) / columns)
    fig, panels = plt.subplots(rows, columns, figsize=(4.6 * columns, 4.4 * rows), squeeze=False)
    for ax in panels.flat[len(axes):]:
        ax.set_visible(False)
    colour = colours(study)
    for ax, axis in zip(panels.flat, axes):
        groups = by_axis[axis.name]
        xs = list(range(len(groups))) if axis.scale == "categorical" else [g.value for g in groups]
        # A categorical axis (kernel schedules) has no order to draw a line along.
        ax.errorbar(xs, [100 * g.acc.value for g in groups], yerr=[100 * (g.acc.half or 0) for g in groups],
                    fmt="o" if axis.scale == "categorical" else "o-", capsize=4, color=colour[axis.name],
                    label="mean ± 95 % CI (seeds)")
        for x, g in zip(xs, groups):
            ax.scatter([x] * len(g.accs), [100 * a for a in g.accs], s=12, color="tab:gray", alpha=0.6, zorder=3,
                       label="each seed")
            if g.first("config_key") == base:
                ax.scatter([x], [100 * g.acc.value], s=90, facecolors="none", edgecolors=BASE_COLOUR, zorder=4,
                           label="base network")
        if axis.scale == "log2":
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        positions = [math.log2(x) if axis.scale == "log2" else float(x) for x in xs]
        span = (max(positions) - min(positions)) or 1.0
        labels, shown = [], None
        for x, position, g in zip(xs, positions, groups):
            text = (f"{'-'.join(map(str, g.value)) if isinstance(g.value, list) else g.value}\n"
                    f"{human(g.first('flops_per_image'))} FLOPs")
            if shown is not None and position - shown < TICK_GAP * span:
                # Too close to the last label to share the axis with it (width 2 and 2.25): said at the point.
                ax.annotate(text.replace("\n", ", "), (x, 100 * g.acc.value), textcoords="offset points",
                            xytext=(0, 12), ha="center", fontsize=8)
                labels.append("")
                continue
            labels.append(text)
            shown = position
        ax.set_xticklabels(labels, fontsize=9)
        ax.set_ylim(low, high)
        ax.set_xlabel(f"{axis.param.replace('model.backbone_kwargs.', '')}" + (" (log scale)" if axis.scale == "log2" else ""))
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{axis.name} ({axis.kind})", fontsize=10)
        ax.grid(alpha=0.3)
    # One legend below the panels, off the data: it is the same in every panel.
    handles, labels = panels[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(list(unique.values()), list(unique), loc="lower center", ncol=len(unique), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.07 / rows, 1, 1))
    atomic_write_bytes(path, _png(fig))
    plt.close(fig)


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (lower) and accuracy (higher), by cost."""
    front, best = [], -math.inf
    for cost, acc in sorted(points):
        if acc > best:
            front.append((cost, acc))
            best = acc
    return front


def plot_compute(by_axis: dict[str, list[Group]], baselines: list[Group], study: StudyConfig, path: Path) -> None:
    """Accuracy against FLOPs and against parameters: every CNN point, each axis a curve, the Pareto front."""
    plt = _plt()
    colour = colours(study)
    fig, panels = plt.subplots(1, 2, figsize=(13, 5))
    for ax, key, name in ((panels[0], "flops_per_image", "forward FLOPs per image"),
                          (panels[1], "params", "parameters")):
        everything = []
        for axis in study.axes:
            groups = by_axis.get(axis.name, [])
            if not groups:
                continue
            xs = [g.first(key) for g in groups]
            ys = [100 * g.acc.value for g in groups]
            # A categorical axis (kernel schedules) has no order to draw a line along.
            fmt = "o" if axis.scale == "categorical" else "o-"
            ax.errorbar(xs, ys, yerr=[100 * (g.acc.half or 0) for g in groups], fmt=fmt, capsize=3, markersize=4,
                        color=colour[axis.name], label=f"{axis.name} ({axis.kind})")
            everything += list(zip(xs, ys))
        base = next((g for a in study.axes for g in by_axis.get(a.name, []) if g.base), None)
        if base is not None:
            ax.scatter([base.first(key)], [100 * base.acc.value], s=110, facecolors="none", edgecolors=BASE_COLOUR,
                       zorder=5, label="base network")
        if everything:
            front = pareto(everything)
            ax.plot([f[0] for f in front], [f[1] for f in front], "--", color=BASE_COLOUR, linewidth=1,
                    label="Pareto front (CNNs)")
        if baselines:
            ax.scatter([g.first(key) for g in baselines], [100 * g.acc.value for g in baselines], marker="*", s=120,
                       color=BASELINE_COLOUR, label="fully connected", zorder=4)
            for g in baselines:
                ax.annotate(str(g.value), (g.first(key), 100 * g.acc.value), textcoords="offset points",
                            xytext=(0, -14), ha="center", fontsize=8)
        ax.set_xscale("log")
        ax.margins(x=0.12, y=0.08)  # room for the baselines' names at the edges
        ax.set_xlabel(f"{name} (log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    panels[0].set_title("Accuracy against compute")
    panels[1].set_title("Accuracy against size")
    # One legend below both panels: a cheap network that beats the trend (a constant-kernel one) lands in the upper
    # left, where a legend inside a panel would hide it. The same colours in both panels, so one legend serves both.
    handles, labels = panels[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.035 * math.ceil(len(labels) / 4), 1, 1))
    atomic_write_bytes(path, _png(fig))
    plt.close(fig)


def plot_curves(by_axis: dict[str, list[Group]], baselines: list[Group], study: StudyConfig, path: Path) -> None:
    """Validation (solid) and clean training-subset (dashed) accuracy per epoch, mean of the seeds."""
    plt = _plt()
    panels_data = [(a.name, by_axis[a.name]) for a in study.axes if by_axis.get(a.name)]
    if baselines:
        panels_data.append((BASELINE_AXIS, baselines))
    if not panels_data:
        return
    # One y-range for all panels, so that their curves compare at a glance.
    columns = min(PANELS_PER_ROW, len(panels_data))
    rows = math.ceil(len(panels_data) / columns)
    fig, panels = plt.subplots(rows, columns, figsize=(4.6 * columns, 4.6 * rows), squeeze=False, sharey=True)
    for ax in panels.flat[len(panels_data):]:
        ax.set_visible(False)
    colour = {**colours(study), BASELINE_AXIS: BASELINE_COLOUR}
    for ax, (name, groups) in zip(panels.flat, panels_data):
        for i, g in enumerate(groups):
            # The panel's colour from axes.png and compute.png, lighter to darker along the axis; the base black.
            strength = 0.35 + 0.65 * (i / (len(groups) - 1) if len(groups) > 1 else 1)
            c = BASE_COLOUR if g.base else shade(colour[name], strength)
            for key, style in (("val_acc_curve", "-"), ("train_acc_curve", "--")):
                curves = [r[key] for r in g.results if r.get(key)]
                if curves:
                    n = min(len(cv) for cv in curves)
                    ax.plot(range(1, n + 1), [100 * mean(cv[e] for cv in curves) for e in range(n)], style, color=c,
                            label=str(g.value) if style == "-" else None)
        ax.set_title(f"{name}: val (solid), train subset (dashed)", fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        # Below the panel, off the curves.
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=min(3, len(groups)), title="point",
                  title_fontsize=8, frameon=False)
        ax.tick_params(labelsize=9)
    for row in panels:
        row[0].set_ylabel("accuracy (%), mean of seeds")
    fig.tight_layout()
    atomic_write_bytes(path, _png(fig))
    plt.close(fig)


# -- the report ---------------------------------------------------------------------------------


def summary_rows(groups: list[Group], n_images: int) -> list[list[Any]]:
    rows: list[list[Any]] = [SUMMARY_COLUMNS]
    for g in groups:
        est = g.acc
        rows.append([
            g.axis, json.dumps(g.value), ",".join(g.first("roles")), g.first("family"), g.first("backbone"),
            g.first("kernels"), est.n, f"{est.value:.5f}", f"{stdev(g.accs):.5f}" if est.n > 1 else "",
            f"{est.low:.5f}" if est.low is not None else "", f"{est.high:.5f}" if est.high is not None else "",
            f"{sampling_half_width(est.value, n_images):.5f}", _fraction(g.mean_of("train_acc")),
            _fraction(g.mean_of("val_acc")), g.first("params"), g.first("flops_per_image"),
            g.first("receptive_field"), g.first("final_map"), f"{mean(r['train_time_s'] for r in g.results):.1f}",
        ])
    return rows


def write_report(out: Path, study: StudyConfig, plan: list[Run], command: str = "") -> Path:
    """summary.csv, the plots and report.md from the finished runs of ``plan`` in ``out``."""
    results = Results(out, plan)
    if not results.all:
        raise ValueError(f"{out} has no results of this study yet")
    n_images = len(results.labels) if results.labels is not None else 10_000
    base = base_key(study, choose(study, {r["run_id"]: r for r in results.all}))
    by_axis = {axis.name: axis_groups(results, axis) for axis in study.axes}
    baselines = [g for b in study.baselines if (g := results.group(BASELINE_AXIS, b.label)) is not None]
    main_groups = [g for groups in by_axis.values() for g in groups] + baselines
    cnns = [g for groups in by_axis.values() for g in groups]
    for g in cnns:
        g.base = g.first("config_key") == base
    base_group = next((g for g in cnns if g.base), None)
    main_by_label = {f"{g.axis}={g.value}" if g.axis != BASELINE_AXIS else str(g.value): g for g in main_groups}
    if base_group is not None:
        main_by_label["base"] = base_group

    # Every step test of every axis is one family for Holm's correction; how the steps change, another.
    steps = {axis.name: axis_steps(results, axis, by_axis[axis.name]) for axis in study.axes if len(by_axis[axis.name]) > 1}
    flat = judged([s for group in steps.values() for s in group])
    changes = {axis.name: step_changes(results, axis, by_axis[axis.name]) for axis in study.axes}
    flat_changes = judged([c for group in changes.values() for c in group])

    pairs = matched_pairs(results, study, by_axis)

    everything = [g for g in results.groups.values()]
    atomic_write_csv(out / "summary.csv", summary_rows(everything, n_images))
    plot_axes(by_axis, study, base, out / "axes.png")
    plot_compute(by_axis, baselines, study, out / "compute.png")
    plot_curves(by_axis, baselines, study, out / "curves.png")

    total = sum(r["train_time_s"] for r in results.all)
    by_role = Counter()
    for r in results.all:
        by_role[r["roles"][0]] += r["train_time_s"]
    # Results written before lightning-cifar 0.3 say "1 threads".
    devices = Counter(re.sub(r"\b1 threads$", "1 thread", r["device"]) for r in results.all)
    lines = [f"# Study: {study.name}", ""]
    if command:
        lines += ["Reproduce with:", "", "```bash", command, "```", ""]
    lines += ["## Setup", "",
              f"- base network: `{study.base_backbone}` {json.dumps(study.base_kwargs)}",
              f"- runs: {len(results.all)} ({', '.join(f'{role} {by_role[role] / 60:.0f} min' for role in by_role)}"
              f" of training; {total / 3600:.2f} hours in all)",
              "- machines: " + "; ".join(f"{d} ({n} runs)" for d, n in devices.most_common()),
              f"- software: {results.all[0].get('software', '–')}",
              f"- seeds per point: {len(study.seeds)} ({'seed' if len(study.seeds) == 1 else 'seeds'}"
              f" {', '.join(map(str, study.seeds))}); test set: {n_images:,} images",
              *(f"- note: {note}" for note in study.notes),
              "- recipe before tuning (every run unless its family's tuning or its own recipe says otherwise):", "",
              "```json", json.dumps(study.recipe, indent=1, sort_keys=True), "```", "",
              "Statistics: a point's accuracy is the mean over its seeds with a t-interval over seeds; next to it, the "
              f"test set's own sampling error (binomial, 95 %, {n_images:,} images), which more seeds do not shrink. "
              f"A difference between two configurations is tested paired over the same test images: "
              f"{BOOTSTRAP_RESAMPLES:,} bootstrap "
              "resamples of the test images (the same draw for both) and, independently, of each side's seeds; the "
              "interval is the percentile interval and the p-value two-sided (where no resample crosses zero, p is "
              f"only known to be below 1/{BOOTSTRAP_RESAMPLES:,}, and a Holm-adjusted p is shown as a bound). How a "
              "step differs from the step before it is tested the same way, on (c - b) - (b - a). "
              f"Words follow one rule: {RULE}. The families: the steps of all axes ({len(flat)} tests), how the "
              f"steps change ({len(flat_changes)}), the matched-compute pairs ({len(pairs)}), the CNN-MLP pairs, and "
              "the budget check. Choices (tuning, 'best' networks) are made on the validation split, never on the "
              "test set.", ""]
    pairs_lines = matched_compute(pairs)
    versus = cnn_vs_mlp(results, baselines, cnns, base_group)
    budget, held = budget_section(results, study, main_by_label)
    lines += answers(study, steps, changes, by_axis, pairs_lines, versus, held)
    lines += tuning_section(results, study)
    for axis in study.axes:
        groups = by_axis[axis.name]
        if not groups:
            continue
        lines += [f"## {axis.kind.capitalize()}: axis `{axis.name}` (`{axis.param}`)", "", *point_table(results, groups), ""]
        if steps.get(axis.name):
            lines += ["Step by step (paired over the test images):", "", *step_lines(steps[axis.name], axis.kind), ""]
        if changes.get(axis.name):
            lines += ["How each step differs from the step before it:", "", *step_change_lines(changes[axis.name]), ""]
        sentence = fit_sentence(axis, groups)
        if sentence:
            lines += [sentence, ""]
    if by_axis:
        lines += ["![every axis](axes.png)", ""]
    lines += ["## Width or depth at matched compute", "", *pairs_lines, "",
              "![accuracy against FLOPs and parameters](compute.png)", "",
              "## CNN vs. fully connected", ""]
    if baselines:
        lines += [*point_table(results, baselines), ""]
    lines += [*versus, ""]
    lines += budget
    lines += anchor_section(results, study)
    lines += fitting_section(main_groups)
    lines += ["## Learning curves", "", "![curves](curves.png)", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
