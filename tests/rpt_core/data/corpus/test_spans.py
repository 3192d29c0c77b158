"""Span classes (rpt_core.data.corpus.spans): validation, mapping onto a rendered document, the token rule,
and the reader keeping a document whose spans are malformed."""

from __future__ import annotations

import json

import pytest

from rpt_core.data.corpus.documents import record_to_document
from rpt_core.data.corpus.readers import ReadStats, iter_documents
from rpt_core.data.corpus.spans import (
    COMPUTED,
    COMPUTED_OP,
    GIVEN,
    TEXT,
    SpanProblem,
    byte_spans,
    document_spans,
    ordered_counts,
    parse_spans,
    token_class,
)

RECORD = {
    "problem": "Add 12 and 30.",
    "solution": "12 + 30 = 42, half is 21.",
    "answer": "7",
    "spans": {
        "problem": [[4, 6, GIVEN], [11, 13, GIVEN]],
        "solution": [[10, 12, COMPUTED_OP], [22, 24, COMPUTED]],
    },
}


def texts(doc) -> list[tuple[str, str]]:
    return [(doc.text[s:e], c) for s, e, c in doc.spans]


def test_spans_follow_the_fields_into_the_default_template():
    doc, coerced = record_to_document(RECORD, "d:1")
    assert coerced == () and doc.text == "Add 12 and 30.\n\n12 + 30 = 42, half is 21."
    assert texts(doc) == [("12", GIVEN), ("30", GIVEN), ("42", COMPUTED_OP), ("21", COMPUTED)]


def test_spans_follow_the_fields_into_another_template():
    doc, _ = record_to_document(RECORD, "d:1", "Q{{{answer}}}: {problem} A: {solution}")
    assert doc.text.startswith("Q{7}: Add 12")
    assert texts(doc) == [("12", GIVEN), ("30", GIVEN), ("42", COMPUTED_OP), ("21", COMPUTED)]
    # A field formatted with a spec may change length: its spans are dropped, the others kept.
    doc, _ = record_to_document(RECORD, "d:1", "{problem:>20} {solution}")
    assert texts(doc) == [("42", COMPUTED_OP), ("21", COMPUTED)]
    # A record without spans has none (unknown), not an empty list (all text).
    doc, _ = record_to_document({"problem": "a", "solution": "b"}, "d:2")
    assert doc.spans is None


@pytest.mark.parametrize(
    "spans",
    [
        [],  # not an object
        {"problem": "4 6 given"},  # not a list
        {"problem": [[4, 6]]},  # no class
        {"problem": [[4, 6, "text"]]},  # text is what is left, never listed
        {"problem": [[6, 4, GIVEN]]},  # empty or reversed
        {"problem": [[4, 99, GIVEN]]},  # past the end of the field
        {"problem": [[4, 6, GIVEN], [5, 7, GIVEN]]},  # overlapping
        {"problem": [[4.0, 6, GIVEN]]},  # not an integer
        {"answer_key": [[0, 1, GIVEN]]},  # a field the record does not have
    ],
)
def test_malformed_spans_are_refused(spans):
    with pytest.raises(SpanProblem):
        parse_spans(spans, RECORD)


def test_a_record_with_malformed_spans_is_kept_without_classes_and_counted(tmp_path):
    path = tmp_path / "c.jsonl"
    bad = {**RECORD, "spans": {"problem": [[4, 99, GIVEN]]}}
    path.write_text(json.dumps(bad) + "\n" + json.dumps(RECORD) + "\n", encoding="utf-8")
    stats, warnings = ReadStats(), []
    docs = list(iter_documents([str(path)], stats=stats, warn=warnings.append))
    assert [d.spans is None for d in docs] == [True, False]
    assert stats.coerced == {"coerced:spans": 1} and "c.jsonl:1: coerced:spans" in warnings[0]


def test_byte_spans_count_utf8_bytes_before_the_span():
    text = "é 12 ü 3"
    assert byte_spans(text, [(2, 4, GIVEN), (7, 8, COMPUTED)]) == [(3, 5, GIVEN), (9, 10, COMPUTED)]
    assert byte_spans("a 12", [(2, 4, GIVEN)]) == [(2, 4, GIVEN)]


SPANS = [(4, 6, GIVEN), (10, 12, COMPUTED_OP)]  # "Add 12 and 42?" -> bytes 4-6 "12", 10-12 "42"


@pytest.mark.parametrize(
    ("start", "end", "want"),
    [
        (4, 5, GIVEN),  # starts at the first digit
        (5, 6, GIVEN),  # the last digit
        (3, 5, GIVEN),  # " 1": starts before the number, carries its first digit
        (3, 4, TEXT),  # the space before it
        (6, 7, TEXT),  # starts right after the last digit
        (5, 11, GIVEN),  # runs over two numbers: the first one's
        (0, 3, TEXT),
        (12, 13, TEXT),  # right after the last span
        (11, 12, COMPUTED_OP),
    ],
)
def test_a_token_takes_the_class_of_the_first_span_it_overlaps(start, end, want):
    assert token_class(start, end, SPANS) == want


def test_no_spans_means_text_and_counts_come_in_report_order():
    assert token_class(0, 1, []) == TEXT
    assert list(ordered_counts({"none": 1, TEXT: 2, GIVEN: 3, COMPUTED: 0})) == [GIVEN, TEXT, "none"]


def test_document_spans_walks_literal_braces():
    spans = {"problem": [(0, 2, GIVEN)]}
    template = "{{x}} {problem}"  # renders "{x} 12"
    assert document_spans(template, {"problem": "12"}, spans) == [(4, 6, GIVEN)]
    assert template.format(problem="12")[4:6] == "12"
