"""Input fingerprints: what a corpus was, and how two records of it differ (content decides, not mtime)."""

from __future__ import annotations

import hashlib
import os

from rpt_core.data.corpus.fingerprint import input_changes, input_fingerprints


def test_a_local_file_is_recorded_by_size_mtime_and_sha256(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"problem": "x"}\n')
    (record,) = input_fingerprints([str(path)], "test")
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (record["key"], record["path"], record["size"]) == ("c", str(path), 17) and record["mtime"]


def test_content_decides_what_changed(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"problem": "x"}\n')
    before = input_fingerprints([str(path)], "test")
    os.utime(path, (0, 0))
    assert input_changes(before, input_fingerprints([str(path)], "test")) == []  # touched only
    path.write_text('{"problem": "y"}\n')  # same size, other bytes
    (change,) = input_changes(before, input_fingerprints([str(path)], "test"))
    assert change.startswith(f"{path} changed (size 17 -> 17 bytes, sha256 ")


def test_inputs_that_appear_or_disappear_are_changes():
    a = {"key": "a", "path": "/d/a.jsonl", "size": 1, "sha256": "0" * 64, "mtime": "t"}
    b = {**a, "key": "b", "path": "/d/b.jsonl"}
    assert input_changes([a], [a, b]) == ["/d/b.jsonl is a new input"]
    assert input_changes([a, b], [a]) == ["/d/b.jsonl is no longer an input"]


def test_a_hub_dataset_changes_with_its_revision_and_unknown_revisions_compare_equal():
    hub = {"key": "org/ds:test", "dataset": "org/ds", "split": "test", "revision": "abc"}
    assert input_changes([hub], [{**hub, "revision": "def"}]) == [
        "org/ds[test] changed (revision abc -> def)"
    ]
    assert input_changes([hub], [{**hub, "revision": None}]) == []  # offline, no cache: cannot tell
