"""``rpt-train eval`` by span class: the class rows regroup the bucket positions (hand-counted here, with
their intervals and paired differences), the bucket rows stay what they were, and shards written before
the ``span_class`` column still evaluate (with no class rows)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from rpt_core.data.corpus.spans import COMPUTED_OP, GIVEN, TEXT
from rpt_core.data.shards import rows_to_table, shard_name, write_shard
from rpt_train.eval.run import run_eval
from rpt_train.eval.stats import Z95
from tests.rpt_train.eval.test_eval_run import ROWS, config, setup, tok  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")

# A is below every bucket; G has no class (a document without spans).
CLASSES = {"A": GIVEN, "B": GIVEN, "C": TEXT, "D": COMPUTED_OP, "E": GIVEN, "F": COMPUTED_OP, "G": None}
# The run's last checkpoint: ntp right on B, E, G; reasoning on B, D, E, G (test_eval_run.EXPECTED).
# Hand-counted (correct, n) per (mode, bucket, class) for it; the base is never right.
RPT = {
    ("ntp", "easy", GIVEN): (2, 2),
    ("ntp", "easy", COMPUTED_OP): (0, 2),
    ("ntp", "easy", TEXT): (0, 1),
    ("ntp", "medium", GIVEN): (1, 1),
    ("ntp", "medium", COMPUTED_OP): (0, 2),
    ("ntp", "medium", TEXT): (0, 0),
    ("ntp", "hard", GIVEN): (1, 1),
    ("ntp", "hard", COMPUTED_OP): (0, 1),
    ("ntp", "hard", TEXT): (0, 0),
    ("reasoning", "easy", GIVEN): (2, 2),
    ("reasoning", "easy", COMPUTED_OP): (1, 2),
    ("reasoning", "easy", TEXT): (0, 1),
    ("reasoning", "medium", GIVEN): (1, 1),
    ("reasoning", "medium", COMPUTED_OP): (1, 2),
    ("reasoning", "medium", TEXT): (0, 0),
    ("reasoning", "hard", GIVEN): (1, 1),
    ("reasoning", "hard", COMPUTED_OP): (0, 1),
    ("reasoning", "hard", TEXT): (0, 0),
}


def with_classes(rows: list[dict]) -> list[dict]:
    return [{**r, "span_class": CLASSES[r["doc_id"]]} for r in rows]


@pytest.fixture
def classed(setup, tmp_path):  # noqa: F811 (the fixture imported above)
    shards = tmp_path / "classed"
    write_shard(shards / "val" / shard_name("val", 0, 0), rows_to_table(with_classes(ROWS)))
    return {**setup, "shards": shards}


def old_shard(path, rows: list[dict]) -> None:
    """A version-1 shard as written before the span_class column existed."""
    table = rows_to_table(rows).drop_columns(["span_class"])
    assert table.schema.metadata[b"rpt.schema_version"] == b"1"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def run(where: dict, **kw) -> list[dict]:
    return run_eval(config(where, **kw))


def test_class_rows_are_hand_counted_with_their_intervals(classed, monkeypatch):
    monkeypatch.setattr("rpt_train.eval.run.plot_report", lambda *a: None)
    table = run(classed)
    rows = {(r["mode"], r["bucket"], r["class"]): r for r in table if "class" in r and r["model"] == "rpt"}
    assert {k: (r["correct"], r["n"]) for k, r in rows.items()} == RPT
    base = [r for r in table if "class" in r and r["model"] == "base"]
    assert len(base) == len(RPT) and all(r["correct"] == 0 for r in base)
    # 2 of 2: Wilson's interval [1 / (1 + z^2 / 2), 1]; paired vs the base's ntp (0, 0): +1 exactly.
    r = rows[("ntp", "easy", GIVEN)]
    assert r["accuracy"] == 1.0 and r["ci_low"] == pytest.approx(1 / (1 + Z95**2 / 2)) and r["ci_high"] == 1
    assert (r["diff_vs_base_ntp"], r["diff_ci_low"], r["diff_ci_high"]) == (1.0, 1.0, 1.0)
    # 1 of 2 right vs 0 of 2: mean 0.5, sd of (1, 0) = sqrt(1/2), half-width z * sqrt(1/2) / sqrt(2) = z / 2.
    r = rows[("reasoning", "easy", COMPUTED_OP)]
    assert r["diff_vs_base_same_mode"] == 0.5 and r["same_mode_ci_low"] == pytest.approx(0.5 - Z95 / 2)
    assert r["diff_ci_high"] == 1.0  # capped
    # An empty class of a bucket gets a row like an empty bucket: n 0, no accuracy.
    assert rows[("ntp", "hard", TEXT)]["accuracy"] is None
    summary = json.loads((classed["out"] / "eval_summary.json").read_text())
    assert summary["positions_by_class"]["hard"] == {GIVEN: 1, COMPUTED_OP: 1, "none": 1}
    assert summary["positions_by_class"]["easy"] == {GIVEN: 2, COMPUTED_OP: 2, TEXT: 1, "none": 1}


def test_bucket_rows_are_unchanged_and_come_first(classed, tmp_path, monkeypatch):
    monkeypatch.setattr("rpt_train.eval.run.plot_report", lambda *a: None)
    table = run(classed)
    old = tmp_path / "old"
    old_shard(old / "val" / shard_name("val", 0, 0), ROWS)
    before = run({**classed, "shards": old, "out": tmp_path / "eval-old"})
    assert all("class" not in r for r in before)  # old shards: no class rows, and no error
    n = len(before)
    assert table[:n] == before and all("class" in r for r in table[n:])
    assert set(table[n]) == set(before[0]) | {"class"}  # class rows: the bucket keys plus one
    summary = json.loads((tmp_path / "eval-old" / "eval_summary.json").read_text())
    assert summary["positions_by_class"]["hard"] == {"none": 3}


def test_the_console_shows_the_hard_bucket_by_class(classed, capsys, monkeypatch):
    monkeypatch.setattr("rpt_train.eval.run.plot_report", lambda *a: None)
    run(classed, quiet=False)
    out = capsys.readouterr().out
    assert "accuracy % [95% interval], hard bucket (entropy >= 1.5) by where the position sits" in out
    section = out[out.index("by where the position sits") :]
    header = section.splitlines()[1]
    assert f"{GIVEN} (n=1)" in header and f"{COMPUTED_OP} (n=1)" in header and f"{TEXT} (n=0)" in header
    rpt_line = next(x for x in section.splitlines() if x.startswith("rpt") and "ntp" in x)
    assert "100.0 [" in rpt_line and "0.0 [" in rpt_line
    assert "difference vs base ntp, points [paired 95% interval], hard bucket" in out
