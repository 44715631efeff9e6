"""The statistics the report states: means with t-intervals, differences, slopes."""

from __future__ import annotations

import math
from dataclasses import dataclass
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
    """mean(a) - mean(b) in accuracy, with a paired-bootstrap 95 % interval and two-sided p-value."""

    value: float
    low: float
    high: float
    p: float
    n_a: int  # seeds
    n_b: int
    p_floor: float = 0.0  # the smallest p the test can show (a bootstrap's 1 / resamples); p at it is a bound

    @property
    def p_at_floor(self) -> bool:
        return self.p <= self.p_floor

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                     chunk: int = 200) -> Comparison:
    """Difference in accuracy of two configurations tested on the same images.

    ``a`` and ``b`` are boolean matrices (seeds x test images): whether each run got each image
    right. Each resample draws the test images with replacement (the same draw for both, which is
    the pairing: both face the same easy and hard images) and, independently for each side, the
    seeds with replacement. The interval is the percentile interval; the p-value is twice the
    share of resampled differences on the far side of zero. scipy.stats.bootstrap resamples one
    level only, and this needs two (images, then seeds), so it is written out here, vectorised.
    """
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need (seeds x images) matrices over the same images, got {a.shape} and {b.shape}")
    n_images = a.shape[1]
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        counts = rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=size)  # image draws
        seeds_a = rng.integers(0, a.shape[0], (size, a.shape[0]))
        seeds_b = rng.integers(0, b.shape[0], (size, b.shape[0]))
        per_image = a[seeds_a].mean(axis=1) - b[seeds_b].mean(axis=1)  # (size, images)
        diffs.append((per_image * counts).sum(axis=1) / n_images)
    boot = np.concatenate(diffs)
    value = float(a.mean() - b.mean())
    low, high = np.percentile(boot, [2.5, 97.5])
    p = min(1.0, 2 * min(float((boot <= 0).mean()), float((boot >= 0).mean())))
    return Comparison(value, float(low), float(high), max(p, 1.0 / resamples), a.shape[0], b.shape[0],
                      p_floor=1.0 / resamples)


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
