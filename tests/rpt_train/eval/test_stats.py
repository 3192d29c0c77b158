"""Intervals and fits of the evaluation (rpt_train.eval.stats), checked against hand-computed values."""

from __future__ import annotations

import math

import pytest

from rpt_train.eval.stats import accuracy_interval, paired_difference, power_law


def test_wilson_interval_by_hand():
    # 8 of 10: centre (0.8 + z^2/20) / (1 + z^2/10), the textbook Wilson interval [0.490, 0.943]
    lo, hi = accuracy_interval([1] * 8 + [0] * 2)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = accuracy_interval([0] * 20)  # 0 of 20: no negative bound, upper bound > 0
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    assert all(math.isnan(x) for x in accuracy_interval([]))


def test_fractional_verdicts_use_the_normal_interval_of_the_mean():
    values = [0.25, 0.75] * 50  # mean 0.5, sd 0.2513
    lo, hi = accuracy_interval(values)
    half = 1.959963984540054 * math.sqrt(sum((v - 0.5) ** 2 for v in values) / 99) / 10
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half))


def test_paired_difference_by_hand():
    a = [1, 1, 1, 0, 1, 0, 1, 1]
    b = [0, 1, 0, 0, 1, 0, 0, 1]
    mean, lo, hi = paired_difference(a, b)  # d = 1,0,1,0,0,0,1,0: mean 3/8, sd sqrt(15/56)
    half = 1.959963984540054 * math.sqrt(15 / 56) / math.sqrt(8)
    assert (mean, lo, hi) == pytest.approx((0.375, 0.375 - half, 0.375 + half))
    same = paired_difference(a, a)
    assert same == (0.0, 0.0, 0.0)  # identical verdicts: no uncertainty about the difference
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1], [1, 0])


def test_pairing_resolves_what_unpaired_intervals_cannot():
    # 1000 positions; the second model is right wherever the first is, plus 30 more.
    a = [1] * 330 + [0] * 670
    b = [1] * 300 + [0] * 700
    mean, lo, _ = paired_difference(a, b)
    assert mean == pytest.approx(0.03) and lo > 0
    assert accuracy_interval(a)[0] < accuracy_interval(b)[1]  # the unpaired intervals overlap


def test_power_law_recovers_an_exact_law():
    compute = [1e9, 2e9, 4e9, 8e9]
    fit = power_law(compute, [0.1 * (c / 1e9) ** 0.2 for c in compute])
    assert fit["b"] == pytest.approx(0.2) and fit["a"] * 1e9**0.2 == pytest.approx(0.1)
    assert fit["r2"] == pytest.approx(1.0) and fit["points"] == 4
    assert power_law([0, 1e9, 2e9], [0.1, 0.2, 0.3]) is None  # the zero-compute base does not count
