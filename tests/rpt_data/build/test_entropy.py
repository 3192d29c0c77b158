"""Proxy top-k entropy: the math by hand, the planning helpers, and the scorer against a direct recomputation.

The reference for the scorer is the plainest possible computation: each document (or window) forwarded alone
with ``model(ids[None])`` and ``topk_entropy(logits[0, t - 1])`` for target t. The scorer's batching, right
padding, length sort, chunked LM head and blocked top-k must not change the numbers (float32, atol 1e-4).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rpt_core.model import Qwen3Config, Qwen3ForCausalLM
from rpt_core.runtime.errors import RptError
from rpt_data.build.entropy import (
    ProxyScorer,
    ScorerConfigError,
    expected_tokens,
    pack_by_length,
    score_documents,
    topk_entropy,
    topk_values,
    window_spans,
)

VOCAB = 4099  # > 4 * 16 * 128 and not a multiple of 128: exercises the blocked top-k and its ragged tail


@pytest.fixture(scope="module")
def model() -> Qwen3ForCausalLM:
    torch.manual_seed(0)
    m = Qwen3ForCausalLM(Qwen3Config.preset("tiny", vocab_size=VOCAB, num_hidden_layers=2)).eval()
    with torch.no_grad():  # larger logits than the 0.02 init so the top-16 entropies vary across positions
        m.lm_head.weight.mul_(3.0)  # tied: scales the embeddings too
    return m


def _docs(lengths: list[int], seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]


def _direct(model, doc: list[int], k: int = 16) -> np.ndarray:
    """Reference: the whole document alone, full logits, entry t from logits[t - 1]."""
    out = np.full(len(doc), np.nan, dtype=np.float32)
    if len(doc) >= 2:
        with torch.no_grad():
            logits = model(torch.tensor(doc)[None])  # (1, n, V)
        for t in range(1, len(doc)):
            out[t] = topk_entropy(logits[0, t - 1], k).item()
    return out


# ---------------------------------------------------------------- topk_entropy by hand


def test_uniform_topk_is_log_k():
    logits = torch.full((3, 50), 2.5)
    assert torch.allclose(topk_entropy(logits, 16), torch.full((3,), math.log(16)))
    # 16 tied maxima far above the rest: the rest are not in the top 16, so still log 16.
    logits = torch.cat([torch.full((16,), 40.0), torch.randn(100)])
    assert topk_entropy(logits, 16).item() == pytest.approx(math.log(16), abs=1e-6)


def test_one_hot_is_zero():
    logits = torch.full((30,), -float("inf"))
    logits[7] = 3.0
    assert topk_entropy(logits, 16).item() == 0.0
    assert topk_entropy(torch.tensor([100.0, 0.0, 0.0]), 16).item() == pytest.approx(0.0, abs=1e-6)


def test_k_renormalises_over_the_top_k_only():
    logits = torch.tensor([2.0, 0.5, 1.0, -1.0, 0.0])
    # Top-2 = {2.0, 1.0}: p = (e^1, 1) / (e^1 + 1).
    p = math.e / (math.e + 1)
    assert topk_entropy(logits, 2).item() == pytest.approx(
        -(p * math.log(p) + (1 - p) * math.log(1 - p)), 1e-6
    )
    # Top-3 = {2.0, 1.0, 0.5}.
    w = [math.exp(2.0), math.exp(1.0), math.exp(0.5)]
    ps = [x / sum(w) for x in w]
    assert topk_entropy(logits, 3).item() == pytest.approx(-sum(q * math.log(q) for q in ps), 1e-6)
    # k >= V: the full distribution.
    w = [math.exp(x) for x in logits.tolist()]
    ps = [x / sum(w) for x in w]
    full = -sum(q * math.log(q) for q in ps)
    assert topk_entropy(logits, 5).item() == pytest.approx(full, 1e-6)
    assert topk_entropy(logits, 99).item() == pytest.approx(full, 1e-6)
    assert topk_entropy(logits.to(torch.bfloat16), 99).dtype == torch.float32


@pytest.mark.parametrize("V", [151936, 5000, 2048 * 4 + 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_blocked_topk_matches_torch_topk(V, dtype):
    g = torch.Generator().manual_seed(V)
    logits = (torch.randn(6, V, generator=g) * 3).to(dtype)
    logits[0, -5:] = 50.0  # winners in the ragged tail
    logits[1, :] = 1.0  # all tied
    logits[2, 1000:1016] = 20.0  # all winners in few blocks
    logits = logits.view(2, 3, V)
    assert torch.equal(topk_values(logits, 16), logits.topk(16, dim=-1).values)


# ---------------------------------------------------------------- planning helpers


def test_window_spans_by_hand():
    assert [(s.start, s.stop, s.first_target) for s in window_spans(10, 4, 2)] == [
        (0, 4, 1),
        (2, 6, 4),
        (4, 8, 6),
        (6, 10, 8),
    ]
    # The last window is moved back to end at n: 11 tokens, stride 2 would start at 8; it starts at 7.
    assert [(s.start, s.stop, s.first_target) for s in window_spans(11, 4, 2)][-1] == (7, 11, 10)
    assert [(s.start, s.stop, s.first_target) for s in window_spans(5, 8, 2)] == [(0, 5, 1)]
    assert window_spans(1, 8, 2) == [] and window_spans(0, 8, 2) == []
    with pytest.raises(ValueError, match="window_overlap"):
        window_spans(10, 4, 4)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 300), window=st.integers(2, 64), data=st.data())
def test_window_spans_cover_each_target_once_with_context(n, window, data):
    overlap = data.draw(st.integers(1, window - 1))
    spans = window_spans(n, window, overlap)
    owned = [t for s in spans for t in range(s.first_target, s.stop)]
    assert owned == list(range(1, n))  # each target once, in order
    for i, s in enumerate(spans):
        assert 0 <= s.start < s.first_target <= s.stop <= n and s.stop - s.start <= window
        assert s.first_target - s.start >= (1 if i == 0 else overlap)
    with pytest.raises(ValueError, match="window_overlap"):
        window_spans(n, window, 0)


def test_pack_by_length():
    lengths = [3, 10, 5, 5, 2, 10, 1]
    batches = pack_by_length(lengths, 20)
    assert batches == [[1, 5], [2, 3, 0, 4], [6]]  # longest first, ties in index order
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 20
    assert pack_by_length([50, 4], 20) == [[0], [1]]  # an oversized item gets its own batch
    assert pack_by_length([], 20) == []


# ---------------------------------------------------------------- the scorer


def test_scorer_matches_direct_recomputation(model):
    lengths = [5, 37, 1, 12, 64, 2, 37, 0, 23, 50, 9]  # scrambled by the length sort; ties; tiny docs
    docs = _docs(lengths)
    calls: list[int] = []
    # Small batches and chunks: several batches, chunks crossing document boundaries.
    scorer = ProxyScorer(model, batch_tokens=128, chunk_positions=17)
    got = scorer.score(docs, on_batch=calls.append)
    assert len(got) == len(docs)
    for doc, g in zip(docs, got, strict=True):
        assert g.dtype == np.float32 and g.shape == (len(doc),)
        if len(doc):
            assert np.isnan(g[0])
        np.testing.assert_allclose(g[1:], _direct(model, doc)[1:], atol=1e-4, rtol=0)
        assert np.isfinite(g[1:]).all()
    expected = sum(max(n - 1, 0) for n in lengths)
    assert scorer.tokens_scored == expected == sum(calls) and len(calls) > 2
    assert scorer.forward_seconds > 0
    # Entropies are not all alike (the comparison above would be weak otherwise).
    assert np.nanstd(np.concatenate(got)) > 0.05
    # Run-to-run determinism for the same input list.
    again = ProxyScorer(model, batch_tokens=128, chunk_positions=17).score(docs)
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(got, again, strict=True))


def test_windowed_scoring_matches_direct_window_context(model):
    n, window, overlap = 70, 16, 5
    docs = _docs([n, 9, 30], seed=2)
    scorer = ProxyScorer(model, max_window=window, window_overlap=overlap, batch_tokens=40)
    got = scorer.score(docs)
    assert scorer.tokens_scored == expected_tokens([n, 9, 30], window, overlap) > n + 9 + 30 - 3
    spans = window_spans(n, window, overlap)
    assert len(spans) > 3
    ref = np.full(n, np.nan, dtype=np.float32)
    for s in spans:
        part = _direct(model, docs[0][s.start : s.stop])  # the window alone, positions from 0
        ref[s.first_target : s.stop] = part[s.first_target - s.start :]
    assert np.isnan(got[0][0]) and np.isfinite(got[0][1:]).all()
    np.testing.assert_allclose(got[0][1:], ref[1:], atol=1e-4, rtol=0)
    # Windowing really changed something: the full-context entropies differ late in the document.
    assert not np.allclose(got[0][40:], _direct(model, docs[0])[40:], atol=1e-3)
    # Shorter documents in the same call are unaffected by the windowing.
    np.testing.assert_allclose(got[1][1:], _direct(model, docs[1])[1:], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got[2][1:], ref_short(model, docs[2], window, overlap)[1:], atol=1e-4, rtol=0)


def ref_short(model, doc, window, overlap):
    ref = np.full(len(doc), np.nan, dtype=np.float32)
    for s in window_spans(len(doc), window, overlap):
        ref[s.first_target : s.stop] = _direct(model, doc[s.start : s.stop])[s.first_target - s.start :]
    return ref


def test_bf16_model_runs(model):
    m16 = Qwen3ForCausalLM(model.config)
    m16.load_state_dict(model.state_dict())
    m16 = m16.to(torch.bfloat16).eval()
    docs = _docs([20, 7, 33], seed=3)
    got = score_documents(m16, docs, batch_tokens=64)
    for doc, g in zip(docs, got, strict=True):
        assert g.dtype == np.float32 and np.isfinite(g[1:]).all()
        # Same bf16 model alone; the slack allows for bf16 kernels that block a batch differently.
        np.testing.assert_allclose(g[1:], _direct(m16, doc)[1:], atol=1e-2)
        assert 0 <= g[1:].min() and g[1:].max() <= math.log(16) + 1e-3


def test_bad_input_and_settings(model):
    scorer = ProxyScorer(model)
    assert scorer.max_window == model.config.max_position_embeddings
    assert scorer.score([]) == []
    with pytest.raises(RptError, match="document 1: token id 4099 is outside"):
        scorer.score([[1, 2], [3, VOCAB]])
    with pytest.raises(RptError, match="token id -1"):
        scorer.score([[1, -1]])
    with pytest.raises(ValueError, match="window_overlap"):
        ProxyScorer(model, max_window=64, window_overlap=64)
    with pytest.raises(ScorerConfigError, match="max_position_embeddings"):
        ProxyScorer(model, max_window=model.config.max_position_embeddings + 1)
    with pytest.raises(RptError, match="batch_tokens"):
        ProxyScorer(model, batch_tokens=0)
    # numpy and tensor inputs are accepted like lists.
    doc = _docs([12], seed=4)[0]
    a, b = scorer.score([np.array(doc), torch.tensor(doc)])
    assert np.array_equal(a, b, equal_nan=True)
