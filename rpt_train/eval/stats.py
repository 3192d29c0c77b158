"""The statistics of the evaluation: intervals for accuracies, paired intervals for differences, and the
power law of accuracy against training compute (RPT paper, Figure 5).

Pure functions of plain numbers so each can be checked by hand.

* ``accuracy_interval``: the Wilson score interval when every verdict is 0 or 1 (greedy modes), else the
  normal interval of a mean (``sampled`` mode: each position's verdict is the mean of k samples).
* ``paired_difference``: models evaluated on the *same* positions are compared position by position: the
  mean of d_i = a_i - b_i with the normal interval mean +- z * sd(d) / sqrt(n). Pairing removes the
  between-position variance, so it resolves differences an unpaired comparison cannot.
* ``power_law``: least squares of log(accuracy) on log(compute), with R^2 in log space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def accuracy_interval(values: Sequence[float], z: float = Z95) -> tuple[float, float]:
    """95% interval of the mean of ``values`` (verdicts in [0, 1]); (nan, nan) for no values."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if all(v in (0, 1) for v in values):  # Wilson: sane at 0%, 100% and small n
        centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)
    half = z * _sd(values, mean) / math.sqrt(n)
    return max(0.0, mean - half), min(1.0, mean + half)


def paired_difference(a: Sequence[float], b: Sequence[float], z: float = Z95) -> tuple[float, float, float]:
    """(mean of a_i - b_i, low, high): the 95% interval of a paired difference of accuracies."""
    if len(a) != len(b):
        raise ValueError(f"paired samples must have equal lengths, got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return math.nan, math.nan, math.nan
    d = [x - y for x, y in zip(a, b, strict=True)]
    mean = sum(d) / n
    half = z * _sd(d, mean) / math.sqrt(n)
    return mean, max(-1.0, mean - half), min(1.0, mean + half)


def _sd(values: Sequence[float], mean: float) -> float:
    """Sample standard deviation (n - 1); 0 for a single value."""
    n = len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0


def power_law(compute: Sequence[float], accuracy: Sequence[float]) -> dict[str, float] | None:
    """Fit accuracy = a * compute^b on points with compute > 0 and accuracy > 0.

    Returns {"a", "b", "r2", "points"} or None with fewer than 3 such points (two always fit exactly).
    """
    pts = [(math.log(c), math.log(y)) for c, y in zip(compute, accuracy, strict=True) if c > 0 and y > 0]
    if len(pts) < 3:
        return None
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    b = sum((x - mx) * (y - my) for x, y in pts) / sxx
    log_a = my - b * mx
    ss_res = sum((y - (log_a + b * x)) ** 2 for x, y in pts)
    ss_tot = sum((y - my) ** 2 for y in ys)
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return {"a": math.exp(log_a), "b": b, "r2": r2, "points": len(pts)}
