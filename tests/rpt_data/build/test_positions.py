"""Selection logic of ``rpt-data build``: held-out documents, eligible positions, filters, row building."""

from __future__ import annotations

import hashlib
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpt_core.data.corpus.documents import Document, content_id
from rpt_core.text.tokenizer import Tokenizer
from rpt_data.build.positions import (
    VAL_MIN_ENTROPY,
    SelectionRule,
    cap_positions,
    choose_val_docs,
    eligible_positions,
    make_rows,
    select_positions,
    stored_entropies,
)
from tests.conftest import QWEN3_TOKENIZER


@pytest.fixture(scope="module")
def qwen3() -> Tokenizer:
    return Tokenizer.load(QWEN3_TOKENIZER)


def rows_for(tok: Tokenizer, text: str, entropies=None, labels_length: int = 8, positions=None, cap=None):
    ids, spans = tok.encode_with_spans(text)
    data = tok.normalize(text).encode()
    ent = stored_entropies(np.linspace(1.0, 2.0, len(ids)) if entropies is None else entropies)
    if positions is None:
        positions, _ = eligible_positions(data, spans, ent)
    doc = Document("d:1", text, ("Algebra",), 3.5, "unit")
    return make_rows(doc, data, ids, spans, ent, positions, labels_length, cap), ids, spans, data


# ---- held-out documents -----------------------------------------------------------------------------


def test_val_docs_are_the_k_smallest_hashes_whatever_the_order():
    docs = [(f"champ:{i}", hashlib.sha256(str(i).encode()).hexdigest()) for i in range(1, 101)]
    by_hash = sorted(docs, key=lambda d: hashlib.sha256(f"7:{d[1]}".encode()).digest())
    chosen = choose_val_docs(iter(docs), 10, seed=7)
    assert chosen.doc_ids == frozenset(d for d, _ in by_hash[:10])
    assert chosen.content_ids == frozenset(c for _, c in by_hash[:10])
    assert (chosen.documents, chosen.duplicates) == (100, 0)
    assert choose_val_docs(reversed(docs), 10, seed=7) == chosen
    assert choose_val_docs(docs, 10, seed=8) != chosen
    assert choose_val_docs(docs, 0, seed=7).doc_ids == frozenset()
    assert choose_val_docs(docs[:3], 10, seed=7).doc_ids == frozenset(d for d, _ in docs[:3])


def test_copies_of_a_held_out_text_are_held_out_and_duplicates_counted():
    texts = [f"text {i}" for i in range(20)]
    docs = [(f"a:{i}", content_id(t)) for i, t in enumerate(texts)]
    docs += [(f"b:{i}", content_id(f"  text\n {i} ")) for i in range(20)]  # the same texts, re-spaced
    chosen = choose_val_docs(docs, 3, seed=0)
    assert (chosen.documents, chosen.duplicates, len(chosen.content_ids)) == (40, 20, 3)
    held = lambda prefix: {d.split(":")[1] for d in chosen.doc_ids if d.startswith(prefix)}
    assert len(chosen.doc_ids) == 6 and held("a:") == held("b:")  # both copies of each held-out text


# ---- eligible positions -----------------------------------------------------------------------------


def test_split_character_and_unscored_positions_are_counted_not_kept(qwen3):
    # " ∑" is split into " \xe2\x88" + "\x91": the second token starts inside the character.
    text = "héllo wörld 日本語 ∑"
    ids, spans = qwen3.encode_with_spans(text)
    data = qwen3.normalize(text).encode()
    starts_mid_char = [t for t in range(1, len(ids)) if data[spans[t][0]] & 0xC0 == 0x80]
    assert starts_mid_char, "the example must contain a split character"
    ent = np.full(len(ids), 1.0)
    ent[0] = ent[3] = np.nan
    positions, skipped = eligible_positions(data, spans, ent)
    assert skipped == Counter(split_char=len(starts_mid_char), truncated=1)
    assert set(positions) == set(range(1, len(ids))) - set(starts_mid_char) - {3}
    for t in positions:
        data[: spans[t][0]].decode("utf-8")  # every kept context is valid UTF-8


def test_too_short_documents_have_no_positions():
    positions, skipped = eligible_positions(b"a", [(0, 1)], np.array([np.nan]))
    assert len(positions) == 0 and not skipped
    with pytest.raises(ValueError):
        eligible_positions(b"ab", [(0, 1), (1, 2)], np.array([np.nan]))


# ---- filters ----------------------------------------------------------------------------------------

ENT = stored_entropies([np.nan, 0.2, 3.0, 0.7, 1.5, 1.5, 0.5, 2.5])
POS = np.arange(1, 8)


@pytest.mark.parametrize(
    ("threshold", "min_context", "expected", "skipped"),
    [
        (None, None, [1, 2, 3, 4, 5, 6, 7], {}),
        (1.5, None, [2, 4, 5, 7], {"below_threshold": 3}),
        (None, 4, [4, 5, 6, 7], {"short_context": 3}),
        (1.5, 4, [4, 5, 7], {"short_context": 3, "below_threshold": 1}),
        (None, 0, [1, 2, 3, 4, 5, 6, 7], {}),
    ],
)
def test_train_filters(threshold, min_context, expected, skipped):
    kept, counts = select_positions("train", POS, ENT, SelectionRule(threshold, min_context))
    assert kept.tolist() == expected
    assert counts == Counter(skipped)


@pytest.mark.parametrize("threshold", [None, 0.1, 2.0, 10.0])
def test_val_keeps_every_position_at_or_above_half_a_nat_whatever_the_threshold(threshold):
    kept, counts = select_positions("val", POS, ENT, SelectionRule(threshold, None, max_samples_per_doc=1))
    assert VAL_MIN_ENTROPY == 0.5
    assert kept.tolist() == [2, 3, 4, 5, 6, 7]  # 0.5 itself is kept; the cap is train-only
    assert counts == Counter(below_threshold=1)
    kept, counts = select_positions("val", POS, ENT, SelectionRule(threshold, 5))
    assert kept.tolist() == [5, 6, 7]  # the context minimum applies to val too
    assert counts == Counter(short_context=4)


def test_cap_keeps_the_highest_entropies_in_position_order_ties_to_the_earlier():
    assert cap_positions(POS, ENT, 3).tolist() == [2, 4, 7]
    assert cap_positions(POS, ENT, 4).tolist() == [2, 4, 5, 7]
    ent = stored_entropies([np.nan, 1.0, 2.0, 2.0, 2.0])
    assert cap_positions(np.arange(1, 5), ent, 2).tolist() == [2, 3]
    assert cap_positions(POS, ENT, None).tolist() == POS.tolist()
    kept, counts = select_positions("train", POS, ENT, SelectionRule(1.0, None, 2))
    assert kept.tolist() == [2, 7] and counts == Counter(below_threshold=3, over_cap=2)


def test_threshold_compares_the_stored_float32_value():
    ent = stored_entropies([np.nan, 1.1, 1.1])
    # float32(1.1) > 1.1, so a float64 threshold of 1.1 keeps it, and so would a reader of the shard.
    kept, _ = select_positions("train", np.array([1, 2]), ent, SelectionRule(1.1))
    assert kept.tolist() == [1, 2]
    kept, _ = select_positions("train", np.array([1, 2]), ent, SelectionRule(float(np.float32(1.1)) + 1e-9))
    assert kept.tolist() == []


# ---- rows -------------------------------------------------------------------------------------------


def test_hand_checked_rows_every_digit_a_boundary(qwen3):
    rows, ids, _, _ = rows_for(qwen3, "$x^2+1=5$", labels_length=8)
    assert ids == [62983, 61, 17, 10, 16, 28, 20, 3]  # "$x" "^" "2" "+" "1" "=" "5" "$"
    assert [r["position"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    first = rows[0]
    assert first["context"] == "$x"
    assert first["label"] == b"^2+1=5$"
    assert first["boundaries"] == [1, 2, 3, 4, 5, 6, 7]
    assert first["label_token_ids"] == [61, 17, 10, 16, 28, 20, 3]
    assert first["token_id"] == 61 and first["n_context_tokens"] == 1
    assert first["domain"] == ["Algebra"] and first["difficulty"] == 3.5 and first["source"] == "unit"
    assert first["entropy"] == float(np.float32(np.linspace(1.0, 2.0, 8)[1]))
    fourth = rows[3]
    assert (fourth["context"], fourth["label"], fourth["boundaries"]) == ("$x^2+", b"1=5$", [1, 2, 3, 4])
    short, *_ = rows_for(qwen3, "$x^2+1=5$", labels_length=3)
    assert (short[0]["label"], short[0]["boundaries"]) == (b"^2+", [1, 2, 3])
    assert (short[-1]["context"], short[-1]["label"], short[-1]["boundaries"]) == ("$x^2+1=5", b"$", [1])


def test_a_context_keeps_at_most_max_context_tokens_left_truncated(qwen3):
    rows, *_ = rows_for(qwen3, "$x^2+1=5$", cap=2)
    assert [(r["context"], r["n_context_tokens"]) for r in rows] == [
        ("$x", 1),
        ("$x^", 2),
        ("^2", 2),
        ("2+", 2),
        ("+1", 2),
        ("1=", 2),
        ("=5", 2),
    ]
    assert [r["label"] for r in rows] == [r["label"] for r in rows_for(qwen3, "$x^2+1=5$")[0]]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(alphabet=st.sampled_from([*"ab 12", "é", "日", "🙂", "\u0301"]), min_size=1, max_size=40),
    cap=st.integers(1, 6),
)
def test_capped_contexts_are_valid_text_ending_at_the_position(qwen3, text, cap):
    rows, ids, spans, data = rows_for(qwen3, text, cap=cap)
    table = qwen3.token_bytes_table
    for r in rows:
        t, ctx = r["position"], r["context"].encode()
        whole = b"".join(table[i] for i in ids[max(0, t - cap) : t])
        assert whole.endswith(ctx) and len(whole) - len(ctx) < 4  # at most a cut character's first bytes
        assert data[: spans[t][0]].endswith(ctx) and r["n_context_tokens"] == min(t, cap)


def test_multibyte_label_boundaries(qwen3):
    rows, ids, _, _ = rows_for(qwen3, "héllo wörld", labels_length=2)
    assert ids == [71, 18503, 385, 289, 9416, 507]
    assert rows[0]["context"] == "h"
    assert rows[0]["label"] == "éllo".encode()
    assert rows[0]["boundaries"] == [3, 5]  # "él" is 3 bytes, "lo" 2


TEXT = st.text(
    alphabet=st.sampled_from(list("ab x0123456789$^+=.\n\t ") + ["é", "日", "本", "∑", "\u0301", "🙂", "ß"]),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT, labels_length=st.integers(1, 10))
def test_rows_are_the_document_split_at_token_boundaries(qwen3, text, labels_length):
    rows, ids, spans, data = rows_for(qwen3, text, labels_length=labels_length)
    normalized = qwen3.normalize(text)
    assert data == normalized.encode()
    table = qwen3.token_bytes_table
    split_char = sum(1 for t in range(1, len(ids)) if data[spans[t][0]] & 0xC0 == 0x80)
    assert len(rows) == max(len(ids) - 1, 0) - split_char
    for r in rows:
        t, ctx = r["position"], r["context"].encode()
        assert normalized.startswith(r["context"])
        assert data[len(ctx) :].startswith(r["label"])  # context + label is the document at t
        assert ctx == b"".join(table[i] for i in ids[:t])
        label_ids = ids[t : t + labels_length]
        assert r["label_token_ids"] == label_ids and r["token_id"] == ids[t]
        assert r["label"] == b"".join(table[i] for i in label_ids)
        lengths = [len(table[i]) for i in label_ids]
        assert r["boundaries"] == [sum(lengths[: j + 1]) for j in range(len(lengths))]
        assert r["boundaries"][-1] == len(r["label"]) and all(b > 0 for b in r["boundaries"])
        assert math.isfinite(r["entropy"]) and r["n_context_tokens"] == t
