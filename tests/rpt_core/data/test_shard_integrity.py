"""Broken shards are reported as such, naming the file: data pages that do not decode behind an intact
footer (every reader), and bytes that differ from the sha256 the manifest records (before a run uses them).
"""

from __future__ import annotations

import pytest

from rpt_core.data import shards
from rpt_core.data.shards import (
    Manifest,
    checked_manifest,
    find_corrupt,
    iter_rows,
    shard_paths,
    verify_shards,
)
from rpt_core.data.stream import ShardStream
from rpt_core.runtime.errors import RptError
from rpt_core.runtime.files import sha256_file
from tests.helpers import corrupt_data_pages, task_rows


def write_build(out, n_files=2, rows=64):
    """Shards plus a manifest listing each with its rows and sha256, as ``rpt-data build`` writes them."""
    entries = []
    for i in range(n_files):
        rel = f"train/{shards.shard_name('train', 0, i)}"
        shards.write_shard(out / rel, shards.rows_to_table(task_rows(rows, seed=i)))
        entries.append(
            {
                "path": rel,
                "split": "train",
                "rank": 0,
                "index": i,
                "rows": rows,
                "sha256": sha256_file(out / rel),
            }
        )
    Manifest(shards=entries).write(out)
    return out


def test_corrupt_pages_behind_an_intact_footer_name_the_shard(tmp_path):
    path = shard_paths(write_build(tmp_path / "s"), "train")[1]
    corrupt_data_pages(path)
    shards.check_schema(path)  # the footer still reads
    with pytest.raises(
        RptError, match=rf"^{path}: corrupt Parquet data \(.*\); rebuild or restore this shard$"
    ):
        list(iter_rows(shard_paths(tmp_path / "s", "train")))
    stream = ShardStream(shard_paths(tmp_path / "s", "train"), shuffle_buffer=1, epochs=1)
    with pytest.raises(RptError, match=rf"^{path}: corrupt Parquet data in row group 0 "):
        list(stream)
    assert str(find_corrupt(shard_paths(tmp_path / "s", "train"))).startswith(f"{path}: corrupt")


def test_shards_are_checked_against_the_manifests_sha256(tmp_path):
    out = write_build(tmp_path / "s")
    paths = shard_paths(out, "train")
    assert verify_shards(out, paths, Manifest.read(out)) == []
    shards.write_shard(paths[0], shards.rows_to_table(task_rows(64, seed=9)))  # valid Parquet, other rows
    with pytest.raises(
        RptError, match=rf"^{paths[0]}: its sha256 differs from the one .*manifest\.json records"
    ):
        verify_shards(out, paths, Manifest.read(out))


def test_a_listed_shard_that_is_missing_is_an_error_and_an_unlisted_one_a_warning(tmp_path):
    out = write_build(tmp_path / "s")
    extra = out / "train" / shards.shard_name("train", 0, 7)
    shards.write_shard(extra, shards.rows_to_table(task_rows(8)))
    warnings = []
    checked_manifest(out, shard_paths(out, "train"), warnings.append)
    assert warnings == [
        f"1 shard(s) are not listed in {out / 'manifest.json'} and were not verified (first: {extra})"
    ]
    missing = shard_paths(out, "train")[0]
    missing.unlink()
    with pytest.raises(RptError, match=rf"{missing.name} is listed in .*manifest\.json but missing"):
        verify_shards(out, shard_paths(out, "train"), Manifest.read(out))


def test_shards_without_a_manifest_warn_once(tmp_path):
    out = tmp_path / "s"
    shards.write_shard(out / "train" / shards.shard_name("train", 0, 0), shards.rows_to_table(task_rows(8)))
    warnings = []
    assert checked_manifest(out, shard_paths(out, "train"), warnings.append) is None
    assert warnings == [f"{out} has no manifest.json: the shards' tokenizer and checksums cannot be checked"]
