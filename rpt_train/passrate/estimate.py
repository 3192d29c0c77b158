"""The arithmetic of pass rates: pure functions of plain numbers, each checkable by hand.

* ``pass_at_k(n, c, k)``: the unbiased estimator of pass@k from ``n`` samples of which ``c`` earned the
  reward (Chen et al. 2021): ``1 - C(n - c, k) / C(n, k)``, the chance that ``k`` of the ``n`` samples drawn
  without replacement hold at least one correct one. pass@1 is ``c / n``.
* ``Band`` and ``keep``: a position is worth RL when its sampled pass rate lies strictly inside a band
  (not always wrong, not always right) and clears the model's own next-token probability of the true
  token by a margin (reasoning helps there; a lucky guess on a random digit does not clear it).
* ``summarise``: per group (entropy bucket, span class) the means and intervals the console table and
  ``passrate_summary.json`` show.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rpt_train.eval.stats import accuracy_interval


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of ``k`` samples is correct), estimated without bias from ``c`` correct of ``n``."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass(frozen=True)
class Band:
    """Keep ``above < pass@1 < below`` (both strict) and, with ``margin`` set, also
    ``pass@1 - p_true >= margin``."""

    above: float = 0.0
    below: float = 1.0
    margin: float | None = None

    def verdict(self, pass1: float, p_true: float) -> str:
        """``kept``, ``below_band`` (pass@1 <= above), ``above_band`` (>= below) or ``margin``."""
        if pass1 <= self.above:
            return "below_band"
        if pass1 >= self.below:
            return "above_band"
        if self.margin is not None and pass1 - p_true < self.margin:
            return "margin"
        return "kept"


def keep(band: Band, pass1: float, p_true: float) -> bool:
    """Whether a position with this sampled pass rate and next-token probability is trained on."""
    return band.verdict(pass1, p_true) == "kept"


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _finite(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def summarise(records: Iterable[dict[str, Any]], k: int) -> dict[str, Any]:
    """Means over scored positions: ``n``; ``ntp`` (greedy next token is the true one), ``p_true``,
    ``greedy`` (greedy reasoning earns the reward), ``pass1`` (sampled, with a 95% interval) and ``passk``
    (pass@k); the shares with every sample wrong (``all_wrong``) or right (``all_right``)."""
    rows = list(records)
    pass1 = [r["n_correct"] / k for r in rows]
    lo, hi = accuracy_interval(pass1)
    return {
        "n": len(rows),
        "ntp": _mean([float(r["ntp"]) for r in rows]),
        "p_true": _mean([r["p_true"] for r in rows]),
        "greedy": _mean([float(r["greedy"]) for r in rows]),
        "pass1": _mean(pass1),
        "pass1_ci": [_finite(lo), _finite(hi)],
        "passk": _mean([pass_at_k(k, r["n_correct"], k) for r in rows]),
        "all_wrong": _mean([float(r["n_correct"] == 0) for r in rows]),
        "all_right": _mean([float(r["n_correct"] == k) for r in rows]),
    }
