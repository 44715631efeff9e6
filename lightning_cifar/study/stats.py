"""The statistics the report states: means with t-intervals, differences, slopes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import mean, stdev
from typing import Optional, Sequence

import numpy as np
from scipy import stats as _scipy_stats

# Resamples of the paired bootstrap; the smallest p-value it can show is one over this.
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A value with a 95 % confidence interval (``half`` is None when it cannot be computed)."""

    value: float
    half: Optional[float]
    n: int

    @property
    def low(self) -> Optional[float]:
        return None if self.half is None else self.value - self.half

    @property
    def high(self) -> Optional[float]:
        return None if self.half is None else self.value + self.half

    @property
    def excludes_zero(self) -> bool:
        return self.half is not None and abs(self.value) > self.half


def t_quantile(df: float, level: float = 0.95) -> float:
    return float(_scipy_stats.t.ppf(0.5 + level / 2, df))


def mean_ci(values: Sequence[float], level: float = 0.95) -> Estimate:
    """Mean and the half-width of its t-interval."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    if n == 1:
        return Estimate(float(values[0]), None, 1)
    return Estimate(mean(values), t_quantile(n - 1, level) * stdev(values) / math.sqrt(n), n)


def prediction_half_width(values: Sequence[float], level: float = 0.95) -> Optional[float]:
    """Half-width of the t prediction interval for one more run around the mean of ``values``: where a single run of
    the same recipe (another seed, or the notebook's one run) is expected to land; wider than the mean's interval by
    sqrt(n + 1)."""
    n = len(values)
    return None if n < 2 else t_quantile(n - 1, level) * stdev(values) * math.sqrt(1 + 1 / n)


def slope_ci(x: Sequence[float], y: Sequence[float], level: float = 0.95) -> Estimate:
    """Least-squares slope of y on x with its t-interval (n - 2 degrees of freedom)."""
    n = len(x)
    if n < 2 or len(set(x)) < 2:
        raise ValueError("a slope needs at least two distinct x values")
    mx, my = mean(x), mean(y)
    sxx = sum((xi - mx) ** 2 for xi in x)
    slope = sum((xi - mx) * (yi - my) for xi, yi in zip(x, y)) / sxx
    if n < 3:
        return Estimate(slope, None, n)
    residual = sum((yi - my - slope * (xi - mx)) ** 2 for xi, yi in zip(x, y))
    se = math.sqrt(residual / (n - 2) / sxx)
    return Estimate(slope, t_quantile(n - 2, level) * se, n)


# -- paired comparisons over the same test images -------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """mean(a) - mean(b) in accuracy (or another contrast of configurations), with a paired-bootstrap 95 % interval
    and two-sided p-value; ``samples`` (the bootstrap's differences) give intervals and tests at other levels."""

    value: float
    low: float
    high: float
    p: float
    n_a: int  # seeds
    n_b: int
    p_floor: float = 0.0  # the smallest p the test can show (a bootstrap's 1 / resamples); p at it is a bound
    samples: Optional[np.ndarray] = field(default=None, repr=False, compare=False)

    @property
    def p_at_floor(self) -> bool:
        return self.p <= self.p_floor

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def interval(self, level: float) -> tuple[float, float]:
        """The percentile interval at confidence ``level`` (e.g. 0.99 for a Holm-corrected test)."""
        if self.samples is None:
            raise ValueError("this comparison kept no bootstrap samples")
        low, high = np.percentile(self.samples, [50 * (1 - level), 50 * (1 + level)])
        return float(low), float(high)

    def equivalence_p(self, margin: float) -> float:
        """Two one-sided tests of ``|difference| < margin``: the larger of the two one-sided bootstrap p-values
        (the share of resampled differences at or beyond -margin, and at or beyond +margin). Small: the difference
        is within the margin."""
        if self.samples is None:
            raise ValueError("this comparison kept no bootstrap samples")
        below, above = float((self.samples <= -margin).mean()), float((self.samples >= margin).mean())
        return max(below, above, self.p_floor)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                     chunk: int = 200) -> Comparison:
    """Difference in accuracy of two configurations tested on the same images: :func:`paired_contrast` with weights
    +1 and -1."""
    return paired_contrast([a, b], [1.0, -1.0], resamples, seed, chunk)


def paired_contrast(groups: Sequence[np.ndarray], weights: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                    seed: int = 0, chunk: int = 200) -> Comparison:
    """A weighted sum of the accuracies of configurations tested on the same images: ``a - b`` (weights 1, -1), or
    how one step of an axis differs from the next, ``(c - b) - (b - a)`` (weights 1, -2, 1).

    Each group is a boolean matrix (seeds x test images): whether each run got each image right. Each resample
    draws the test images with replacement (the same draw for every group, which is the pairing: all face the same
    easy and hard images) and, independently for each group, the seeds with replacement. The interval is the
    percentile interval; the p-value is twice the share of resampled values on the far side of zero.
    scipy.stats.bootstrap resamples one level only, and this needs two (images, then seeds), so it is written out
    here, vectorised.
    """
    groups = [np.asarray(g, dtype=np.float32) for g in groups]
    if len(groups) != len(weights) or len(groups) < 2:
        raise ValueError(f"need at least two groups and one weight each, got {len(groups)} and {len(weights)}")
    if any(g.ndim != 2 or g.shape[1] != groups[0].shape[1] for g in groups):
        raise ValueError(f"need (seeds x images) matrices over the same images, got {[g.shape for g in groups]}")
    n_images = groups[0].shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        counts = rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=size)  # image draws
        draws = [rng.integers(0, g.shape[0], (size, g.shape[0])) for g in groups]
        per_image = sum(w * g[d].mean(axis=1) for w, g, d in zip(weights, groups, draws))  # (size, images)
        values.append((per_image * counts).sum(axis=1) / n_images)
    boot = np.concatenate(values)
    value = float(sum(w * g.mean() for w, g in zip(weights, groups)))
    low, high = np.percentile(boot, [2.5, 97.5])
    p = min(1.0, 2 * min(float((boot <= 0).mean()), float((boot >= 0).mean())))
    return Comparison(value, float(low), float(high), max(p, 1.0 / resamples), groups[0].shape[0],
                      groups[-1].shape[0], p_floor=1.0 / resamples, samples=boot)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment for a family of tests (scipy.stats offers only false-discovery-rate
    control, which is weaker): sort ascending, multiply the i-th smallest by (m - i), keep it monotone."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def sampling_half_width(accuracy: float, images: int, level: float = 0.95) -> float:
    """Half-width of the binomial (normal approximation) interval of an accuracy measured on ``images``
    test images: the test set's own sampling error, which more seeds do not shrink."""
    z = float(_scipy_stats.norm.ppf(0.5 + level / 2))
    return z * math.sqrt(max(accuracy * (1 - accuracy), 0.0) / images)


@dataclass(frozen=True)
class LineFit:
    """A least-squares line through an axis, and whether a line is a fair summary of it."""

    slope: Estimate
    lack_of_fit_p: Optional[float]  # None without replicates or with only two x values


def line_with_lack_of_fit(x: Sequence[float], y: Sequence[float], level: float = 0.95) -> LineFit:
    """Slope with its t-interval, and the lack-of-fit F test: the spread of the point means around the
    line against the spread of the seeds around their point means (pure error). A small p-value says
    the points do not lie on a line, so the slope is an average of unequal steps."""
    slope = slope_ci(x, y, level)
    groups: dict[float, list[float]] = {}
    for xi, yi in zip(x, y):
        groups.setdefault(xi, []).append(yi)
    n, m = len(y), len(groups)
    df_pe, df_lof = n - m, m - 2
    if df_pe < 1 or df_lof < 1:
        return LineFit(slope, None)
    mx, my = mean(x), mean(y)
    intercept = my - slope.value * mx
    ss_pe = sum((yi - mean(g)) ** 2 for g in groups.values() for yi in g)
    ss_lof = sum(len(g) * (mean(g) - intercept - slope.value * xi) ** 2 for xi, g in groups.items())
    if ss_pe == 0:
        return LineFit(slope, 0.0 if ss_lof > 0 else 1.0)
    f = (ss_lof / df_lof) / (ss_pe / df_pe)
    return LineFit(slope, float(_scipy_stats.f.sf(f, df_lof, df_pe)))


# -- the words a comparison earns -------------------------------------------------------------------

ALPHA = 0.05
EQUIVALENCE_MARGIN = 0.01  # one point of accuracy: "equal" means "within one point", shown by two one-sided tests
GAIN, LOSS, EQUAL, UNRESOLVED = "gain", "loss", "equal", "not resolved"
RULE = (f"a difference is a **gain** or a **loss** only where Holm's method, within its family of tests, rejects "
        f"\"no difference\" (adjusted p below {ALPHA}: its interval at the Holm-corrected level excludes 0); it is "
        f"**equal** only where two one-sided tests, Holm-corrected the same way, place it within "
        f"±{100 * EQUIVALENCE_MARGIN:g} point; anything else is **not resolved**, and its 95 % interval says what it "
        "may be")


@dataclass(frozen=True)
class Judgement:
    """What the report may say about one comparison of a family: its word, and the Holm-adjusted p-values behind
    it (the difference test's and the equivalence test's)."""

    comparison: Comparison
    word: str  # GAIN, LOSS, EQUAL or UNRESOLVED
    adjusted_p: float
    adjusted_equivalence_p: float
    family_size: int

    @property
    def resolved(self) -> bool:
        return self.word in (GAIN, LOSS)


def judge(comparisons: Sequence[Comparison], alpha: float = ALPHA,
          margin: float = EQUIVALENCE_MARGIN) -> list[Judgement]:
    """The one rule of the report's words, applied to a family of comparisons (see :data:`RULE`)."""
    adjusted = holm([c.p for c in comparisons])
    adjusted_equal = holm([c.equivalence_p(margin) for c in comparisons])
    judgements = []
    for c, p, p_equal in zip(comparisons, adjusted, adjusted_equal):
        if p < alpha:
            word = GAIN if c.value > 0 else LOSS
        elif p_equal < alpha:
            word = EQUAL
        else:
            word = UNRESOLVED
        judgements.append(Judgement(c, word, p, p_equal, len(comparisons)))
    return judgements
