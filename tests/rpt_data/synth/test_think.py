"""Reasoning demonstrations (rpt_data.synth.think): the scratch work is right and lands where it should."""

from __future__ import annotations

import random
import re

import pytest

from rpt_data.synth.think import THINK_CLOSE, THINK_OPEN, add_thoughts, scratch


def test_scratch_formats_by_hand():
    assert scratch(341, "+", 27) == "341+27: 1+7+0=8, 4+2+0=6, 3+0+0=3 so 368"
    assert scratch(341, "-", 27) == "341-27: 11-7-0=4, 4-2-1=1, 3-0-0=3 so 314"
    assert scratch(18, "\\times", 17) == (
        "18*17: 18*7: 8*7+0=56, 1*7+5=12 so 126, 18*1: 8*1+0=8, 1*1+0=1 so 18, "
        "126+180: 6+0+0=6, 2+8+0=10, 1+1+1=3 so 306"
    )
    assert scratch(3, "-", 5) is None  # negative results are not demonstrated
    assert scratch(123, "\\cdot", 456) is None  # neither factor has at most two digits


@pytest.mark.parametrize(
    ("a", "op", "b"), [(a, op, b) for a in (0, 7, 99, 4302) for b in (0, 5, 58) for op in "+-*"]
)
def test_every_scratch_ends_in_the_true_result(a, op, b):
    text = scratch(a, {"*": "\\times"}.get(op, op), b)
    if text is None:
        assert op == "-" and a < b
        return
    assert text.endswith(f" so {a + b if op == '+' else a - b if op == '-' else a * b}")


def test_thoughts_go_before_checked_results_only():
    text = "First, $18 \\times 17 = 306$. Then $2 + 3 \\cdot 4 = 14$ and $35 + 306 = 341$, not $1 + 1 = 3$."
    out = add_thoughts(text, random.Random(0), p_result=1.0, empty=0)
    assert re.sub(r"<think>.*?</think>", "", out) == text  # only insertions
    thoughts = re.findall(r"<think>(.*?)</think>", out)
    assert [t.split(":")[0] for t in thoughts] == ["18*17", "35+306"]  # 3 \cdot 4 = 14 is part of a sum


def test_a_thought_can_start_inside_the_number_and_empty_thoughts_sit_at_token_boundaries():
    rng = random.Random(3)
    outs = [add_thoughts("So $35 + 306 = 341$ and we stop here.", rng, 1.0, empty=1) for _ in range(30)]
    splits = {re.search(r"= (\d*)<think>", o.replace("<think></think>", "")).group(1) for o in outs}
    assert "" in splits and ({"3", "34"} & splits)  # before the first digit, and after some digits
    assert all(o.count(THINK_OPEN + THINK_CLOSE) == 1 for o in outs)
    assert not any(re.search(r"[A-Za-z]<think></think>[A-Za-z]", o) for o in outs)  # never inside a word


def test_demonstration_corpus_is_deterministic_and_keeps_plain_records(tmp_path):
    import json

    from rpt_data.synth.writer import write_corpus

    a = write_corpus(tmp_path / "a.jsonl", 50, seed=1, think_fraction=0.5)
    b = write_corpus(tmp_path / "b.jsonl", 50, seed=1, think_fraction=0.5)
    assert a[1] == 50
    plain = tmp_path / "c.jsonl"
    write_corpus(plain, 50, seed=1)
    assert a == b
    with_thoughts = (tmp_path / "a.jsonl").read_text().splitlines()
    without = plain.read_text().splitlines()
    changed = [x != y for x, y in zip(with_thoughts, without, strict=True)]
    assert 10 < sum(changed) < 40  # about half are demonstrations, the rest byte-identical
    for x, y in zip(with_thoughts, without, strict=True):
        demo, plain_record = json.loads(x), json.loads(y)
        if x != y:  # a demonstration: its spans are dropped (thoughts may split a number), text kept
            assert "spans" not in demo and "spans" in plain_record
            plain_record.pop("spans")
            demo = {
                k: re.sub(r"<think>.*?</think>", "", v) if isinstance(v, str) else v for k, v in demo.items()
            }
        assert demo == plain_record


def test_drills_are_interleaved_and_worked_out(tmp_path):
    import json

    from rpt_data.synth.writer import write_corpus

    _, written = write_corpus(tmp_path / "d.jsonl", 200, seed=2, think_drills=0.5)
    records = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    drills = [r for r in records if r["source"] == "rpt-synth-drill"]
    assert written == len(records) == 200 + len(drills) and 60 < len(drills) < 140
    for r in drills:
        thought = re.search(r"<think>(.*)</think>", r["solution"]).group(1)
        assert thought.endswith(" so " + r["answer"]) and r["solution"].endswith(r["answer"] + "$.")


def test_drills_only_corpus_thinks_before_or_inside_results(tmp_path):
    import json

    from rpt_core.runtime.errors import RptError
    from rpt_data.synth.writer import write_corpus

    out = tmp_path / "d.jsonl"
    _, written = write_corpus(out, 300, seed=3, think_fraction=0.5, think_results=1.0, drills_only=True)
    assert (
        written == 300
        and write_corpus(
            tmp_path / "e.jsonl", 300, seed=3, think_fraction=0.5, think_results=1.0, drills_only=True
        )[0]
        == _
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["source"] == "rpt-synth-drill" for r in records)
    demos = [r for r in records if THINK_OPEN in r["solution"]]
    assert 100 < len(demos) < 200  # about half; the rest plain
    inside = 0
    for r in records:
        plain = re.sub(r"<think>.*?</think>", "", r["solution"])
        assert plain.endswith(" = " + r["answer"] + "$.")  # the plain drill, with the thoughts taken out
        worked = re.search(r"<think>([^<]+)</think>(\d*)", r["solution"])
        if r in demos:
            assert worked and worked.group(1).endswith(" so " + r["answer"])
            before = r["solution"][: worked.start()].replace("<think></think>", "")
            inside += not before.endswith("= ")  # the thought starts after some digits of the result
            assert r["answer"].startswith(before.split("= ")[-1])
        else:
            assert THINK_OPEN not in r["solution"] + r["problem"]
    assert 0.2 * len(demos) < inside < 0.6 * len(demos)  # 40% of multi-digit results, by design
    with pytest.raises(RptError):
        write_corpus(tmp_path / "f.jsonl", 10, drills_only=True, think_drills=0.5)


def test_plain_drills_carry_their_spans_and_demonstrations_drop_them(tmp_path):
    import json

    from rpt_data.synth.writer import write_corpus

    out = tmp_path / "d.jsonl"
    write_corpus(out, 200, seed=5, think_fraction=0.5, think_results=1.0, drills_only=True)
    plain = demos = 0
    for r in map(json.loads, out.read_text().splitlines()):
        if THINK_OPEN in r["problem"] + r["solution"]:
            demos += 1
            assert "spans" not in r  # a thought may open inside a number: its spans would be wrong
            continue
        plain += 1
        a, op, b = re.fullmatch(r"[A-Za-z ]+\$(\d+) (\S+) (\d+)\$[.?]", r["problem"]).groups()
        given = [(r["problem"][s:e], c) for s, e, c in r["spans"]["problem"]]
        result = [(r["solution"][s:e], c) for s, e, c in r["spans"]["solution"]]
        assert given == [(a, "given"), (b, "given")]
        assert result == [(r["answer"], "computed_op")]  # the restated operands are copied text
    assert plain > 50 and demos > 50
