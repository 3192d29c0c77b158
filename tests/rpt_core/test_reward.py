"""Rewards checked by hand against real Qwen3 token boundaries.

Labels and boundaries are built the way the shard builder builds them: the bytes of the ground-truth
continuation tokens and their cumulative byte lengths, from the real Qwen3
tokenizer shipped in tests/fixtures/qwen3.
"""

from __future__ import annotations

from itertools import accumulate

import pytest

from rpt_core.reward import REWARDS, compute_rewards, first_token_reward, prefix_reward
from rpt_core.runtime.errors import RptError
from rpt_core.text.tokenizer import byte_level_token_bytes


@pytest.fixture(scope="module")
def tok(qwen3_raw_tokenizer):
    return qwen3_raw_tokenizer


@pytest.fixture(scope="module")
def split(tok):
    """split(text, n_context) -> (context_token_strings, label bytes, boundaries) from the real tokens."""

    def _split(text: str, n_context: int, n_label: int = 6):
        tokens = tok.encode(text).tokens
        label_tokens = [byte_level_token_bytes(t) for t in tokens[n_context : n_context + n_label]]
        return label_tokens, b"".join(label_tokens), list(accumulate(len(b) for b in label_tokens))

    return _split


def test_known_encoding(tok):
    ids = tok.encode("The capital of France is Paris. $x^2+1=5$").ids
    assert ids == [785, 6722, 315, 9625, 374, 12095, 13, 400, 87, 61, 17, 10, 16, 28, 20, 3]


def test_prefix_on_word_boundaries(split):
    # context "The capital of France is" -> label " Paris. $x^2+"
    label_tokens, label, bnds = split("The capital of France is Paris. $x^2+1=5$", 5)
    assert label_tokens[:3] == [b" Paris", b".", b" $"]
    assert bnds[:3] == [6, 7, 9]
    assert prefix_reward(" Paris", label, bnds) == 1.0
    assert prefix_reward(" Paris.", label, bnds) == 1.0
    assert prefix_reward(" Paris. $x", label, bnds) == 1.0
    assert prefix_reward("Paris", label, bnds) == 0.0  # the leading space is part of the token
    assert prefix_reward(" Par", label, bnds) == 0.0  # a true prefix, but it ends inside " Paris"
    assert prefix_reward(" Paris ", label, bnds) == 0.0  # " $" is one token: a lone space is no boundary
    assert prefix_reward(" London", label, bnds) == 0.0


def test_space_before_digit_is_a_boundary(split):
    # "It costs 5 dollars": " " and "5" are separate tokens, but " dollars" is one.
    label_tokens, label, bnds = split("It costs 5 dollars and 12 cents.", 1)
    assert label_tokens[:4] == [b" costs", b" ", b"5", b" dollars"]
    assert prefix_reward(" costs ", label, bnds) == 1.0  # trailing space before a digit: a boundary
    assert prefix_reward(" costs 5", label, bnds) == 1.0
    assert prefix_reward(" costs 5 ", label, bnds) == 0.0  # trailing space before a word: not one
    assert prefix_reward(" costs 5 dollars", label, bnds) == 1.0
    assert prefix_reward(" costs 6", label, bnds) == 0.0


def test_nested_latex_prediction(split):
    # "so x = \frac{1}{2}$": tokens " \", "frac", "{", "1", "}{", "2", "}$"
    label_tokens, label, bnds = split("so x = \\frac{1}{2}$ and", 3, n_label=7)
    assert label_tokens == [b" \\", b"frac", b"{", b"1", b"}{", b"2", b"}$"]
    assert prefix_reward(" \\frac{1}{2}$", label, bnds) == 1.0
    assert prefix_reward(" \\frac{1}{", label, bnds) == 1.0
    assert prefix_reward(" \\frac{1}{2}", label, bnds) == 0.0  # "}$" is one token
    assert prefix_reward(" \\frac{1}", label, bnds) == 0.0  # "}{" is one token


def test_multibyte_unicode(split):
    # "The area is πr² — café −3 ok": " π" (3 bytes), "r", "²" (2 bytes), " —", " café", " −" (4 bytes)
    label_tokens, label, bnds = split("The area is πr² — café −3 ok", 3, n_label=7)
    assert label_tokens[0] == " π".encode() and len(label_tokens[0]) == 3
    assert label_tokens[2] == "²".encode()
    assert prefix_reward(" π", label, bnds) == 1.0
    assert prefix_reward(" πr²", label, bnds) == 1.0  # boundary counted in bytes, not characters
    assert prefix_reward(" πr² — café", label, bnds) == 1.0
    assert prefix_reward(" πr² — café −", label, bnds) == 1.0
    assert prefix_reward(" πr² — cafe", label, bnds) == 0.0  # e is not é
    assert prefix_reward(" πr² — café -", label, bnds) == 0.0  # ASCII hyphen is not U+2212
    assert prefix_reward(" πr", label, bnds) == 1.0
    assert prefix_reward(" pi", label, bnds) == 0.0


def test_longer_than_label_empty_and_none(split):
    _, label, bnds = split("The capital of France is Paris. $x^2+1=5$", 5, n_label=2)
    assert label == b" Paris." and bnds == [6, 7]
    assert prefix_reward(" Paris.", label, bnds) == 1.0
    assert prefix_reward(" Paris. $", label, bnds) == 0.0  # longer than the label
    assert prefix_reward("", label, bnds) == 0.0
    assert prefix_reward(None, label, bnds) == 0.0
    assert first_token_reward("", label, bnds) == 0.0
    assert first_token_reward(None, label, bnds) == 0.0
    assert first_token_reward(" Paris", b"", []) == 0.0


def test_first_token_variant(split):
    _, label, bnds = split("It costs 5 dollars and 12 cents.", 1)
    assert first_token_reward(" costs", label, bnds) == 1.0
    assert first_token_reward(" costs ", label, bnds) == 0.0  # a later boundary is not enough
    assert first_token_reward(" cost", label, bnds) == 0.0
    assert prefix_reward(" costs ", label, bnds) == 1.0  # ...while prefix accepts it
    _, label, bnds = split("It costs 5 dollars and 12 cents.", 2)
    assert first_token_reward(" ", label, bnds) == 1.0


def test_compute_rewards_registry_and_penalty(split):
    _, label, bnds = split("The capital of France is Paris. $x^2+1=5$", 5)
    preds = [" Paris", None, " Paris.", "Paris", ""]
    n = len(preds)
    assert compute_rewards(preds, [label] * n, [bnds] * n) == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert compute_rewards(preds, [label] * n, [bnds] * n, format_penalty=-1.0) == [1.0, -1.0, 1.0, 0.0, 0.0]
    assert compute_rewards(preds, [label] * n, [bnds] * n, kind="first-token") == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert set(REWARDS) == {"prefix", "first-token"}
    with pytest.raises(RptError, match="first-token.*prefix"):
        compute_rewards(preds, [label] * n, [bnds] * n, kind="exact")
    with pytest.raises(ValueError):
        compute_rewards(preds, [label], [bnds])


def test_lone_surrogate_scores_zero_without_raising():
    assert prefix_reward("\ud800", b"abc", [3]) == 0.0
