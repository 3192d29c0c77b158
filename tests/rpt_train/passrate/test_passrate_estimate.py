"""Hand-checked pass@k, the band and margin that keep a position, and the per-group summary."""

from __future__ import annotations

import math

import pytest

from rpt_train.passrate.estimate import Band, keep, pass_at_k, summarise


def test_pass_at_k_by_hand():
    # k = 4 samples, c = 2 right: pass@1 = 2/4; pass@2 = 1 - C(2,2)/C(4,2) = 1 - 1/6; pass@4 = 1.
    assert pass_at_k(4, 2, 1) == pytest.approx(0.5)
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)
    assert pass_at_k(4, 2, 3) == 1.0  # any 3 of 4 hold one of the 2 right ones
    assert pass_at_k(4, 2, 4) == 1.0
    # 8 samples, 1 right: pass@2 = 1 - C(7,2)/C(8,2) = 1 - 21/28
    assert pass_at_k(8, 1, 2) == pytest.approx(0.25)
    assert pass_at_k(8, 3, 8) == 1.0


def test_pass_at_k_edges():
    assert all(pass_at_k(5, 0, j) == 0.0 for j in range(1, 6))  # never right
    assert all(pass_at_k(5, 5, j) == 1.0 for j in range(1, 6))  # always right
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_refuses_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


# (pass@1, p_true) -> verdict under the default band, then with margin 0.2
TABLE = [
    ("never", 0.0, 0.0),  # all k wrong
    ("always", 1.0, 0.9),  # all k right
    ("lucky", 0.125, 0.1),  # one lucky sample where the next token is as good
    ("helps", 0.5, 0.1),  # reasoning clearly beats the next token
    ("hurts", 0.25, 0.6),  # the next token is better than thinking
    ("edge", 0.45, 0.25),  # exactly the margin 0.2 over p_true
]


def kept(band: Band) -> list[str]:
    return [name for name, p1, pt in TABLE if keep(band, p1, pt)]


def test_default_band_drops_all_wrong_and_all_right():
    assert kept(Band()) == ["lucky", "helps", "hurts", "edge"]
    assert Band().verdict(0.0, 0.0) == "below_band" and Band().verdict(1.0, 0.9) == "above_band"


def test_margin_drops_lucky_guesses_and_positions_where_thinking_hurts():
    assert kept(Band(margin=0.2)) == ["helps", "edge"]  # 0.45 - 0.25 = 0.2 is kept (>=)
    assert Band(margin=0.2).verdict(0.125, 0.1) == "margin"
    assert kept(Band(margin=0.0)) == ["lucky", "helps", "edge"]


def test_band_bounds_are_strict_and_movable():
    assert kept(Band(above=0.125, below=0.5)) == ["hurts", "edge"]  # 0.125 and 0.5 themselves are out
    assert kept(Band(above=-1, below=1.01)) == [name for name, *_ in TABLE]  # keep everything


def test_summarise_by_hand():
    rows = [
        {"ntp": True, "p_true": 0.5, "greedy": True, "n_correct": 4},
        {"ntp": False, "p_true": 0.1, "greedy": False, "n_correct": 0},
        {"ntp": False, "p_true": 0.3, "greedy": True, "n_correct": 2},
        {"ntp": True, "p_true": 0.7, "greedy": False, "n_correct": 1},
    ]
    s = summarise(rows, k=4)
    assert s["n"] == 4 and s["ntp"] == 0.5 and s["greedy"] == 0.5
    assert s["p_true"] == pytest.approx(0.4)
    assert s["pass1"] == pytest.approx((1 + 0 + 0.5 + 0.25) / 4)
    assert s["passk"] == pytest.approx(3 / 4)  # three positions have at least one right sample
    assert s["all_wrong"] == 0.25 and s["all_right"] == 0.25
    lo, hi = s["pass1_ci"]
    assert lo < s["pass1"] < hi


def test_summarise_of_nothing_is_empty_not_an_error():
    s = summarise([], k=4)
    assert s["n"] == 0 and s["pass1"] is None and s["pass1_ci"] == [None, None]
    assert not any(isinstance(v, float) and math.isnan(v) for v in s.values())
