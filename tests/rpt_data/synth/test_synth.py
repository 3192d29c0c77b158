"""SynthMath: reproducible to the byte, readable by our reader, and its arithmetic is right."""

from __future__ import annotations

import json
import random
import re
from fractions import Fraction
from pathlib import Path

from click.testing import CliRunner

from rpt_core.data.corpus.readers import ReadStats, iter_documents
from rpt_data.cli.generate import generate
from rpt_data.synth.families import FAMILIES, FIELD_ORDER, dump_record, generate_records

REPO = Path(__file__).resolve().parents[3]
COMMITTED = REPO / "data" / "synthmath.jsonl"
COMMAND = "rpt-data generate --n 3000 --seed 0 --out data/synthmath.jsonl"


def dump(n: int, seed: int) -> bytes:
    return "".join(dump_record(r) for r in generate_records(n, seed)).encode()


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, braces balanced (answers like ``\\frac{3}{4}`` nest)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return None


def test_same_seed_same_bytes_other_seed_other_bytes():
    assert dump(300, 0) == dump(300, 0)
    assert dump(300, 0) != dump(300, 1)
    assert dump(50, 0) == dump(300, 0)[: len(dump(50, 0))]  # a prefix does not depend on n


def test_records_shape_and_answers():
    records = list(generate_records(1500, seed=3))
    assert len({r["problem"] for r in records}) == len(records)
    assert {r["domain"][0] for r in records} >= {f(random.Random(0))["domain"][0] for f in FAMILIES.values()}
    for r in records:
        assert tuple(r) == FIELD_ORDER and r["source"] == "rpt-synth"
        assert isinstance(r["difficulty"], float) and 1.0 <= r["difficulty"] <= 5.0
        assert r["domain"][0].startswith("Mathematics -> ")
        assert last_boxed(r["solution"]) == r["answer"], r
        assert r["solution"].count("$") % 2 == 0 and r["problem"].count("$") % 2 == 0


def _value(text: str) -> Fraction:
    m = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", text)
    return Fraction(int(m[2]), int(m[3])) * (-1 if m[1] else 1) if m else Fraction(text)


NUM = r"\(?-?\d+(?:\.\d+)?\)?"
END = r"(?=$| =| \\equiv| \\pmod|,)"
BINARY = re.compile(rf"(?:^|= |\\equiv )({NUM}) (\\times|\\cdot|\\div|\+|-) ({NUM}) = ({NUM}){END}")
FRAC = re.compile(rf"\\frac\{{(-?\d+)\}}\{{(\d+)\}} = (-?\d+){END}")
EUCLID = re.compile(r"^(\d+) = (\d+) \\times (\d+) \+ (\d+)$")
REDUCE = re.compile(r"= (\d+) \\equiv (\d+) \\pmod\{(\d+)\}")
FRACTION_PROBLEM = re.compile(r"\\frac\{(\d+)\}\{(\d+)\} ([+-]) \\frac\{(\d+)\}\{(\d+)\}")
OPS = {
    "\\times": lambda a, b: a * b,
    "\\cdot": lambda a, b: a * b,
    "\\div": lambda a, b: a / b,
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
}


def test_stated_arithmetic_is_correct():
    """Every simple step ``a op b = c``, ``\\frac{a}{b} = c``, division and mod reduction holds."""
    checked = 0
    for r in generate_records(1500, seed=5):
        for math in re.findall(r"\$([^$]*)\$", r["solution"]):
            for a, op, b, c in BINARY.findall(math):
                a, b, c = (Fraction(v.strip("()")) for v in (a, b, c))
                assert OPS[op](a, b) == c, (math, r["problem"])
                checked += 1
            for a, b, c in FRAC.findall(math):
                assert Fraction(int(a), int(b)) == int(c), math
                checked += 1
            for n, d, q, rem in EUCLID.findall(math):
                assert int(n) == int(d) * int(q) + int(rem) and int(rem) < int(d), math
                checked += 1
            for x, y, m in REDUCE.findall(math):
                assert int(x) % int(m) == int(y), math
                checked += 1
        assert _value(r["answer"]) == _value(last_boxed(r["solution"]))
        if m := FRACTION_PROBLEM.search(r["problem"]):
            x, y = Fraction(int(m[1]), int(m[2])), Fraction(int(m[4]), int(m[5]))
            assert _value(r["answer"]) == (x + y if m[3] == "+" else x - y), r["problem"]
            checked += 1
    assert checked > 3000  # the patterns really matched most steps


def test_records_pass_our_reader_strictly(tmp_path: Path):
    path = tmp_path / "synth.jsonl"
    path.write_bytes(dump(400, 11))
    stats = ReadStats()
    docs = list(iter_documents(str(path), stats=stats, strict=True))
    assert len(docs) == 400 and not stats.skipped and not stats.coerced
    assert docs[0].doc_id == "synth:1" and docs[0].source == "rpt-synth" and docs[0].difficulty is not None


def test_committed_file_is_reproduced_by_the_documented_command(tmp_path: Path):
    assert COMMAND in (REPO / "data" / "README.md").read_text(encoding="utf-8")
    args = COMMAND.split()[2:]
    out = tmp_path / "regen.jsonl"
    args[args.index("--out") + 1] = str(out)
    result = CliRunner().invoke(generate, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    assert "wrote 3000 records" in result.output
    committed = COMMITTED.read_bytes()
    assert len(committed) < 3_000_000
    assert out.read_bytes() == committed
    assert sum(1 for _ in committed.splitlines()) == 3000
    assert json.loads(committed.splitlines()[0])["source"] == "rpt-synth"


def test_generate_rejects_bad_arguments(tmp_path: Path):
    result = CliRunner().invoke(generate, ["--n", "0", "--out", str(tmp_path / "x.jsonl")])
    assert result.exit_code != 0 and "n must be >= 1" in result.output
    result = CliRunner().invoke(generate, ["--n", "3", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert not (tmp_path / "x.jsonl").exists()
