"""SynthMath's spans: every number of a generated record is classed; recording them left the text alone."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from rpt_core.data.corpus.spans import COMPUTED, COMPUTED_OP, GIVEN, parse_spans
from rpt_data.synth.families import _c, _g, _record, generate_records
from rpt_data.synth.think import demonstrable_results

COMMITTED = Path(__file__).resolve().parents[3] / "data" / "synthmath.jsonl"
# sha256 of every record's problem and solution in data/synthmath.jsonl before spans were recorded.
TEXT_SHA256 = "ffdb6bdcdd0a37bd34d2aad1e69c1e17257b88c1226d028a314e15751b91e7dd"
NUMBER = re.compile(r"-?\d+(\.\d+)?|-?\\frac\{\d+\}\{\d+\}")


def texts_sha256(records) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update((r["problem"] + "\x00" + r["solution"] + "\x00").encode())
    return h.hexdigest()


def test_committed_documents_are_byte_identical_to_those_before_spans():
    records = [json.loads(line) for line in COMMITTED.read_text(encoding="utf-8").splitlines()]
    assert texts_sha256(records) == TEXT_SHA256
    assert all("spans" in r for r in records)


def test_a_hand_written_record_gets_one_span_per_marked_number():
    r = _record(
        "Test",
        1.0,
        f"What is ${_g(12)} + {_g(30)}$, halved?",
        [f"${12} + {30} = {_c(42)}$.", f"Half of $42$ is ${_c(21)}$."],
        "21",
    )
    assert r["problem"] == "What is $12 + 30$, halved?"  # the marks are gone
    assert r["solution"] == "$12 + 30 = 42$. Half of $42$ is $21$. Therefore the answer is $\\boxed{21}$."
    assert r["spans"] == {
        "problem": [[9, 11, GIVEN], [14, 16, GIVEN]],
        "solution": [[11, 13, COMPUTED_OP], [33, 35, COMPUTED]],  # 42 has a scratchpad; halving has none
    }
    cut = lambda field, s, e: r[field][s:e]
    assert [cut("solution", s, e) for s, e, _ in r["spans"]["solution"]] == ["42", "21"]


def test_signs_and_fractions_are_inside_their_spans():
    fraction = "-\\frac{3}{4}"
    r = _record("Test", 1.0, f"Is ${_g(-7)}$ small?", [f"So $x = {_c(fraction)}$."], "1")
    ((s, e, cls),) = r["spans"]["problem"]
    assert (r["problem"][s:e], cls) == ("-7", GIVEN)
    ((s, e, cls),) = r["spans"]["solution"]
    assert (r["solution"][s:e], cls) == ("-\\frac{3}{4}", COMPUTED)


def test_every_span_of_every_family_is_a_number_of_its_field_and_valid():
    for r in generate_records(700, seed=4):
        parse_spans(r["spans"], r)  # sorted, disjoint, inside the text
        for field, spans in r["spans"].items():
            for s, e, cls in spans:
                assert NUMBER.fullmatch(r[field][s:e]), (r[field][s:e], r[field])
                assert (cls == GIVEN) == (field == "problem"), r
        # computed_op is exactly where rpt_data.synth.think would work a result out in a thought
        ops = {(s, e) for s, e, c in r["spans"]["solution"] if c == COMPUTED_OP}
        assert ops == demonstrable_results(r["solution"]), r["solution"]


def test_every_number_in_a_problem_is_given_unless_it_restates_one_or_is_template_text():
    restated = 0
    for r in generate_records(700, seed=6):
        problem, spans = r["problem"], r["spans"]["problem"]
        for m in re.finditer(r"\d+", problem.replace("x^2", "x^_").replace("= 0$", "= _$")):
            if any(s <= m.start() < e for s, e, _ in spans):
                continue
            earlier = [problem[s:e] for s, e, _ in spans if e <= m.start()]
            assert m.group() in earlier, (m.group(), problem)  # "pick 4 cards out of 14" after binom(14, 4)
            restated += 1
    assert restated > 0
