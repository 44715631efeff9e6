"""The statistics the report states: means with t-intervals, differences, slopes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import mean, stdev
from typing import Optional, Sequence

from scipy import stats as _scipy_stats


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


def difference_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Estimate:
    """mean(a) - mean(b) with a Welch t-interval (unequal variances)."""
    diff = mean(a) - mean(b)
    if len(a) < 2 or len(b) < 2:
        return Estimate(diff, None, min(len(a), len(b)))
    va, vb = stdev(a) ** 2 / len(a), stdev(b) ** 2 / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Estimate(diff, 0.0, min(len(a), len(b)))
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return Estimate(diff, t_quantile(df, level) * se, min(len(a), len(b)))


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
