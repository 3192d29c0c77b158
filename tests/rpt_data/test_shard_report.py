"""``rpt-data inspect``: hand-checked formatting helpers and a report over real shards in a tmp build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from rpt_core.data.shards import rows_to_table, shard_name, write_shard
from rpt_core.runtime.errors import RptError
from rpt_data.cli.inspect_shards import inspect
from rpt_data.shard_report import (
    escape,
    fill_bins,
    format_row,
    histogram_lines,
    inspect_build,
    kept_counts,
    split_label,
    summarize_split,
)


def row(
    doc: str,
    position: int,
    entropy: float,
    context: str = "so the answer is",
    label: bytes = b" 42.",
    boundaries=(1, 2, 3, 4),
) -> dict:
    return {
        "doc_id": doc,
        "position": position,
        "context": context,
        "label": label,
        "boundaries": list(boundaries),
        "entropy": entropy,
        "n_context_tokens": position,
        "token_id": 220,
        "label_token_ids": [220, 19, 17, 13][: len(boundaries)],
    }


@pytest.fixture
def build(tmp_path: Path) -> tuple[Path, np.ndarray]:
    out = tmp_path / "out"
    # entropies multiples of 1/8 are exact in float32, so the quantiles can be compared exactly
    entropies = np.arange(40, dtype=np.float32) / 8
    rows = [row(f"doc:{i % 6}", 10 + i, float(h)) for i, h in enumerate(entropies)]
    rows[0] = row(
        "doc:0", 3, 0.0, context="Qline one\nline two " + "x" * 42, label="é!".encode(), boundaries=[2, 3]
    )
    write_shard(out / "train" / shard_name("train", 0, 0), rows_to_table(rows[:25]))
    write_shard(out / "train" / shard_name("train", 1, 0), rows_to_table(rows[25:]))
    write_shard(
        out / "val" / shard_name("val", 0, 0), rows_to_table([row("v:1", 5, 1.0), row("v:1", 6, 2.0)])
    )
    manifest = {
        "counts": {"positions_scored": {"train": 400, "val": 8}, "positions_kept": {"train": 40, "val": 2}}
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out, entropies


def test_format_row_by_hand():
    assert format_row("so the answer is", b" 42.", [1, 2, 3, 4]) == "so the answer is |  |4|2|."
    assert format_row("abc", b" 42.", [0, 2, 9]) == "abc |  4|2."  # 0 and out-of-range cuts ignored
    ctx = "y" * 100 + "end\n"
    assert format_row(ctx, b"x", [1]) == "..." + "y" * 56 + "end\\n | x"
    assert format_row(ctx, b"x", [1], width=200) == "y" * 100 + "end\\n | x"
    assert split_label("é!".encode(), [2, 3]) == ["é", "!"]
    assert escape("a\tb\nc\x00é") == "a\\tb\\nc\\x00é"


def test_histogram_helpers_by_hand():
    assert fill_bins({0: 2, 2: 4}) == [(0.0, 2), (0.25, 0), (0.5, 4)]
    assert fill_bins({}) == []
    lines = histogram_lines([(0.0, 2), (0.25, 0), (0.5, 4), (0.75, 1)], bar_width=8)
    assert [ln.count("#") for ln in lines] == [4, 0, 8, 2]
    assert lines[2].startswith("  [ 0.50,  0.75)") and lines[2].endswith("  4")
    assert histogram_lines([(0.0, 1000), (0.25, 1)], bar_width=10)[1].count("#") == 1  # never invisible


def test_kept_counts_layouts():
    assert kept_counts(
        {"counts": {"positions_scored": {"train": 10}, "positions_kept": {"train": 4}}}, "train"
    ) == (4, 10)
    assert kept_counts({"counts": {"train": {"positions_scored": 10, "positions_kept": 4}}}, "train") == (
        4,
        10,
    )
    assert kept_counts({"counts": {"positions_scored": {"train": 10}}}, "train") is None
    assert (
        kept_counts({"counts": {"positions_scored": {"val": 10}, "positions_kept": {"val": 1}}}, "train")
        is None
    )
    assert (
        kept_counts({"counts": {"train": {"positions_scored": "10", "positions_kept": 4}}}, "train") is None
    )
    assert kept_counts({}, "train") is None


def test_summary_numbers(build):
    out, entropies = build
    s = summarize_split(out, "train", rows=3)
    assert (s.rows, s.documents, s.shards) == (40, 6, 2)
    expected = np.quantile(entropies.astype(np.float64), [0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
    assert list(s.quantiles.values()) == pytest.approx(list(expected), abs=1e-9)
    assert sum(n for _, n in s.histogram) == 40
    assert s.histogram[0] == (0.0, 2) and len(s.histogram) == 20  # 0..4.875 nats, 2 rows per 0.25 bin
    assert s.kept == (40, 400)
    assert [r["position"] for r in s.samples] == [3, 11, 12]


def test_report_text(build):
    out, _ = build
    text = inspect_build(out, split="all", rows=2)
    assert "== train: 40 rows from 6 documents in 2 shard(s)" in text
    assert "kept 40 of 400 scored positions (10.00%)" in text
    assert "== val: 2 rows from 1 documents in 1 shard(s)" in text
    assert "kept 2 of 8 scored positions (25.00%)" in text
    assert "...line one\\nline two " + "x" * 42 + " | é|!" in text  # 60 context chars, newline escaped
    assert "[doc:1 t=11 H=0.12] so the answer is |  |4|2|." in text
    assert "note:" not in text
    val_only = inspect_build(out, split="val", rows=0)
    assert "train" not in val_only and "first" not in val_only


def test_degrades_without_manifest_counts(build):
    out, _ = build
    (out / "manifest.json").write_text(json.dumps({"schema_version": 1}))
    assert "kept fraction: not recorded in manifest.json" in inspect_build(out, split="train")
    (out / "manifest.json").unlink()
    assert "kept fraction: not recorded" in inspect_build(out, split="train")
    (out / "manifest.json").write_text(
        json.dumps({"counts": {"positions_scored": {"train": 99}, "positions_kept": {"train": 7}}})
    )
    assert "note: the manifest counts 7 kept positions but the shards hold 40 rows" in inspect_build(out)


def test_errors(build, tmp_path: Path):
    out, _ = build
    with pytest.raises(RptError, match="no such build directory"):
        inspect_build(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RptError, match="no shards found"):
        inspect_build(tmp_path / "empty")
    for p in (out / "val").glob("*.parquet"):
        p.unlink()
    assert "== val: no shards" in inspect_build(out, split="all")
    with pytest.raises(RptError, match="no shards found"):
        inspect_build(out, split="val")
    pq.write_table(pa.table({"doc_id": ["a"]}), out / "val" / "foreign.parquet")  # not an RPT shard
    with pytest.raises(RptError, match="schema version"):
        inspect_build(out, split="val")


def test_cli(build, tmp_path: Path):
    out, _ = build
    result = CliRunner().invoke(inspect, [str(out), "--rows", "1", "--split", "train"])
    assert result.exit_code == 0, result.output
    assert "== train: 40 rows" in result.output and "entropy histogram" in result.output
    result = CliRunner().invoke(inspect, [str(tmp_path / "nope")])
    assert result.exit_code == 1 and result.output.strip().count("\n") == 0
    assert "no such build directory" in result.output
