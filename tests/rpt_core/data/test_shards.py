"""The shard contract (rpt_core.data.shards): discovery, the typed manifest, the one tokenizer check."""

from __future__ import annotations

import json

import pytest

from rpt_core.data.shards import (
    MANIFEST_NAME,
    Manifest,
    check_tokenizer,
    rows_to_table,
    shard_name,
    shard_paths,
    write_shard,
)
from rpt_core.runtime.errors import RptError
from tests.helpers import byte_tokenizer, shard_row


@pytest.fixture
def paths(tmp_path):
    rows = [shard_row("d", "x", ["a"], 1.0, position=1)]
    out = []
    for i in range(2):
        path = tmp_path / "train" / shard_name("train", 0, i)
        write_shard(path, rows_to_table(rows))
        out.append(path)
    (tmp_path / "train" / ".train-00000-00009.parquet.tmp").write_bytes(b"half written")
    return out


def test_shard_paths_finds_a_split_a_flat_directory_and_a_file(tmp_path, paths):
    assert shard_paths(tmp_path, "train") == paths
    assert shard_paths(tmp_path / "train", "train") == paths  # flat directory
    assert shard_paths(paths[0], "train") == [paths[0]]


def test_shard_paths_says_what_is_missing(tmp_path, paths):
    with pytest.raises(RptError, match=r"no val/ shards under .* \(found: train\)"):
        shard_paths(tmp_path, "val")
    assert shard_paths(tmp_path, "val", required=False) == []
    (tmp_path / "empty").mkdir()
    with pytest.raises(RptError, match="holds no .parquet files"):
        shard_paths(tmp_path / "empty", "train")
    with pytest.raises(RptError, match="no such directory"):
        shard_paths(tmp_path / "nope", "train")


def test_manifest_round_trips_and_keeps_unknown_keys(tmp_path):
    m = Manifest(top_k=16, counts={"documents_read": 3}, extra={"future_key": [1, 2]})
    m.write(tmp_path)
    back = Manifest.read(tmp_path)
    assert back == m and back.to_dict()["future_key"] == [1, 2]


def test_manifest_absent_partial_and_bad(tmp_path):
    assert Manifest.read(tmp_path) is None
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"tokenizer_base_vocab_fingerprint": "ab"}))
    assert Manifest.read(tmp_path).tokenizer_base_vocab_fingerprint == "ab"
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(RptError, match="schema version 99"):
        Manifest.read(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{")
    with pytest.raises(RptError, match="invalid JSON"):
        Manifest.read(tmp_path)


def test_check_tokenizer_refuses_another_vocabulary():
    tok = byte_tokenizer()
    check_tokenizer(None, tok)  # hand-made shards: nothing to check
    check_tokenizer(Manifest(tokenizer_base_vocab_fingerprint=tok.base_vocab_fingerprint), tok)
    with pytest.raises(RptError, match="another tokenizer"):
        check_tokenizer(Manifest(tokenizer_base_vocab_fingerprint="0" * 64), tok)


def test_a_shard_written_before_span_class_loads_everywhere(tmp_path):
    """Version-1 shards predate the span_class column: readers that ask for it get nulls, others are as
    before (the trainer's stream, the verl export and inspect never ask for it)."""
    import pyarrow.parquet as pq

    from rpt_core.data.shards import iter_rows
    from rpt_core.data.stream import ShardStream
    from rpt_data.shard_report import summarize_split

    rows = [shard_row("d", "x", ["a"], 1.0, position=p) for p in (1, 2)]
    path = tmp_path / "train" / shard_name("train", 0, 0)
    path.parent.mkdir()
    pq.write_table(rows_to_table(rows).drop_columns(["span_class"]), path)
    assert "span_class" not in pq.read_schema(path).names
    assert [r["span_class"] for r in iter_rows([path], ["position", "span_class"])] == [None, None]
    assert "span_class" not in next(iter_rows([path]))  # all columns: the file's own
    stream = ShardStream([path], columns=["doc_id", "position", "context", "label", "boundaries"], epochs=1)
    assert sorted(r["position"] for r in stream) == [1, 2]
    assert summarize_split(tmp_path, "train").rows == 2
    new = tmp_path / "new.parquet"
    write_shard(new, rows_to_table([{**rows[0], "span_class": "given"}]))
    assert next(iter_rows([new], ["span_class"]))["span_class"] == "given"
