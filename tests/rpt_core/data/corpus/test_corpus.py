"""Readers: every kind of bad input is counted under its reason, nothing is lost, ids are stable."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rpt_core.data.corpus.documents import Document, render_text, template_fields
from rpt_core.data.corpus.readers import ReadStats, count_documents, iter_documents, resolve_inputs
from rpt_core.runtime.errors import RptError
from tests.conftest import CHAMP


def rec(problem="What is $1+1$?", solution="It is $\\boxed{2}$.", **extra):
    return {
        "domain": ["Mathematics -> Arithmetic"],
        "difficulty": 1.0,
        "problem": problem,
        "solution": solution,
        "answer": "2",
        "source": "test",
        **extra,
    }


def line(obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def read(inputs, **kw):
    stats = ReadStats()
    docs = list(iter_documents(inputs, stats=stats, warn=lambda _: None, **kw))
    assert stats.documents_read == stats.documents_yielded + sum(stats.skipped.values())
    assert stats.documents_yielded == len(docs)
    assert len({d.doc_id for d in docs}) == len(docs)
    return docs, stats


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    bad = [
        line(rec()),  # 1 ok
        b'{"problem": "x", "solution": \n',  # 2 malformed_json
        b"[1, 2]\n",  # 3 not_an_object
        line({"problem": "p"}),  # 4 missing_field:solution
        line(rec(problem="   \n")),  # 5 empty_field:problem
        line(rec(solution=5)),  # 6 wrong_type:solution
        b'{"problem": "caf\xc3\xa9 \xff\xfe", "solution": "s"}\n',  # 7 invalid_utf8
        b"\n",  # blank: not a record
        line(rec(domain="Algebra")),  # 9 ok, str domain -> ("Algebra",)
        line(rec(difficulty="hard")),  # 10 ok, coerced:difficulty
        line(rec(source=7, domain=[1, 2])),  # 11 ok, coerced:source + coerced:domain
        b'{"problem": "p", "solution": "\\ud800 lone"}\n',  # 12 invalid_utf8 (a JSON escape, not bytes)
        line(rec(problem=None)),  # 13 missing_field:problem
    ]
    (root / "bad.jsonl").write_bytes(b"".join(bad))
    (root / "empty.jsonl").write_bytes(b"\n  \n")
    big = "x" * 200_000  # forces the incremental array parser across several read chunks
    arr = [rec(), 3, rec(solution=big), rec(problem="second")]
    (root / "arr.json").write_text(json.dumps(arr, indent=1))
    raw = json.dumps([rec(), rec(problem="BAD")]).encode().replace(b"BAD", b"\xff\xfe")
    (root / "arr_utf8.json").write_bytes(raw)
    (root / "arr_broken.json").write_text(
        '[{"problem": "a", "solution": "b"}, {"problem": , {"problem": "c"}]'
    )
    (root / "lines.json").write_bytes(line(rec()) + line(rec(problem="p2")))
    table = pa.table(
        {
            "problem": ["a", "", None, "d"],
            "solution": ["s", "s", "s", "s"],
            "difficulty": [1.5, None, 2.0, 3.0],
            "extra": [1, 2, 3, 4],
        }
    )
    pq.write_table(table, root / "tab.parquet")
    return root


def test_every_bad_kind_counted(corpus: Path):
    docs, stats = read(str(corpus / "bad.jsonl"))
    assert [d.doc_id for d in docs] == ["bad:1", "bad:9", "bad:10", "bad:11"]
    assert stats.skipped == Counter(
        {
            "malformed_json": 1,
            "not_an_object": 1,
            "missing_field:solution": 1,
            "empty_field:problem": 1,
            "wrong_type:solution": 1,
            "invalid_utf8": 2,
            "missing_field:problem": 1,
        }
    )
    assert stats.coerced == Counter({"coerced:difficulty": 1, "coerced:source": 1, "coerced:domain": 1})
    assert stats.documents_read == 12  # the blank line is not a record
    by_id = {d.doc_id: d for d in docs}
    assert by_id["bad:9"].domain == ("Algebra",)
    assert by_id["bad:10"].difficulty is None and by_id["bad:10"].domain == ("Mathematics -> Arithmetic",)
    assert by_id["bad:11"].source is None and by_id["bad:11"].domain is None
    assert by_id["bad:1"] == Document(
        "bad:1", "What is $1+1$?\n\nIt is $\\boxed{2}$.", ("Mathematics -> Arithmetic",), 1.0, "test"
    )


def test_warnings_name_file_line_and_are_bounded(corpus: Path):
    seen: list[str] = []
    stats = ReadStats()
    list(iter_documents(str(corpus / "bad.jsonl"), stats=stats, max_warnings=3, warn=seen.append))
    assert seen == stats.warnings
    assert len(seen) == 4 and seen[-1].startswith("... further warnings suppressed")
    assert seen[0] == f"{corpus / 'bad.jsonl'}:2: malformed_json"
    assert stats.warnings_suppressed == 8 + 3 - 3  # 8 skips + 3 coercions, 3 shown


def test_strict_stops_at_first_bad_record(corpus: Path):
    it = iter_documents(str(corpus / "bad.jsonl"), strict=True)
    assert next(it).doc_id == "bad:1"
    with pytest.raises(RptError, match=r"bad\.jsonl:2: malformed_json"):
        next(it)
    with pytest.raises(RptError, match="empty_file"):
        list(iter_documents(str(corpus / "empty.jsonl"), strict=True))


def test_empty_file_counted_per_file(corpus: Path):
    docs, stats = read(str(corpus / "empty.jsonl"))
    assert docs == [] and stats.files_read == 1 and stats.documents_read == 0
    assert stats.files_skipped == Counter({"empty_file": 1})


def test_json_array_streamed(corpus: Path):
    docs, stats = read(str(corpus / "arr.json"))
    assert [d.doc_id for d in docs] == ["arr:0", "arr:2", "arr:3"]
    assert len(docs[1].text) > 200_000 and docs[2].text.startswith("second")
    assert stats.skipped == Counter({"not_an_object": 1})
    docs, stats = read(str(corpus / "arr_utf8.json"))
    assert [d.doc_id for d in docs] == ["arr_utf8:0"] and stats.skipped == Counter({"invalid_utf8": 1})
    docs, stats = read(str(corpus / "arr_broken.json"))  # no resync inside an array: the rest is one skip
    assert [d.doc_id for d in docs] == ["arr_broken:0"] and stats.skipped == Counter({"malformed_json": 1})
    docs, _ = read(str(corpus / "lines.json"))  # .json holding JSON lines
    assert [d.doc_id for d in docs] == ["lines:1", "lines:2"]


def test_parquet(corpus: Path):
    docs, stats = read(str(corpus / "tab.parquet"))
    assert [d.doc_id for d in docs] == ["tab:0", "tab:3"]
    assert [d.difficulty for d in docs] == [1.5, 3.0] and docs[0].domain is None
    assert stats.skipped == Counter({"empty_field:problem": 1, "missing_field:problem": 1})
    (corpus / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(RptError, match="not a readable Parquet file"):
        list(iter_documents(str(corpus / "junk.parquet")))


def test_directory_and_glob(corpus: Path, tmp_path: Path):
    (corpus / "sub").mkdir()
    (corpus / "sub" / "more.jsonl").write_bytes(line(rec()))
    (corpus / ".hidden.jsonl").write_bytes(line(rec()))  # e.g. an atomic-write temp file: ignored
    (corpus / "notes.txt").write_text("not a corpus file")
    docs, stats = read(str(corpus))
    assert stats.files_read == 8
    keys = [s.key for s in resolve_inputs(str(corpus))]
    assert keys == ["arr", "arr_broken", "arr_utf8", "bad", "empty", "lines", "sub/more", "tab"]
    assert "sub/more:1" in {d.doc_id for d in docs}
    assert stats.documents_read == 12 + 4 + 2 + 2 + 2 + 4 + 1
    docs, stats = read(str(corpus / "*.json"))
    assert stats.files_read == 4
    assert {d.doc_id.split(":")[0] for d in docs} == {"arr", "arr_utf8", "arr_broken", "lines"}
    # the same file named twice (directory + explicit path) is read once
    assert len(resolve_inputs([str(corpus), str(corpus / "bad.jsonl")])) == 8


def test_ids_stable_and_unique_across_inputs(tmp_path: Path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "x.jsonl").write_bytes(line(rec()))
    alone, _ = read(str(tmp_path / "a" / "x.jsonl"))
    assert alone[0].doc_id == "x:1"
    both, _ = read([str(tmp_path / "a" / "x.jsonl"), str(tmp_path / "b" / "x.jsonl")])
    assert [d.doc_id for d in both] == ["a/x:1", "b/x:1"]
    (tmp_path / "a" / "x.parquet").write_bytes(b"")  # same stem, other suffix
    keys = [
        s.key for s in resolve_inputs([str(tmp_path / "a" / "x.jsonl"), str(tmp_path / "a" / "x.parquet")])
    ]
    assert keys == ["x.jsonl", "x.parquet"]


def test_input_resolution_errors(tmp_path: Path):
    with pytest.raises(RptError, match="no such file"):
        resolve_inputs(str(tmp_path / "missing.jsonl"))
    with pytest.raises(RptError, match="no such file"):
        resolve_inputs("nope.parquet")
    with pytest.raises(RptError, match="match"):
        resolve_inputs(str(tmp_path / "*.jsonl"))
    (tmp_path / "x.txt").write_text("{}")
    with pytest.raises(RptError, match="unsupported file type"):
        resolve_inputs(str(tmp_path / "x.txt"))
    with pytest.raises(RptError, match="no .jsonl"):
        resolve_inputs(str(tmp_path))
    assert resolve_inputs("KbsdJames/Omni-MATH")[0].key == "KbsdJames/Omni-MATH:test"


def test_templates(corpus: Path):
    assert template_fields("{problem}\n\n{solution}") == ("problem", "solution")
    assert (
        render_text({"problem": "p", "answer": 4, "domain": ["a", "b"]}, "{problem} {answer} [{domain}]")
        == "p 4 [a, b]"
    )
    for bad in ("{problem", "{}", "{0}", "{problem.upper}", "no fields", "{problem!x}", "{problem:zz}"):
        with pytest.raises(RptError):
            iter_documents(str(corpus / "bad.jsonl"), template=bad)  # checked before any record is read
    docs, stats = read(str(corpus / "lines.json"), template="{problem}\n{answer}\n{nope}")
    assert docs == [] and stats.skipped == Counter({"missing_field:nope": 2})
    docs, stats = read(str(corpus / "lines.json"), template="{problem:.0}")  # renders to nothing
    assert docs == [] and stats.skipped == Counter({"empty_text": 2})
    docs, stats = read(str(corpus / "lines.json"), template="{problem:d}")  # spec unfit for a str value
    assert docs == [] and stats.skipped == Counter({"format_error:problem": 2})


def test_count_documents(corpus: Path):
    assert count_documents(str(corpus / "bad.jsonl")) == 12
    assert count_documents([str(corpus / "tab.parquet"), str(corpus / "lines.json")]) == 6
    assert count_documents(str(corpus / "arr.json")) is None
    assert count_documents("KbsdJames/Omni-MATH") is None


def test_real_champ_corpus():
    docs, stats = read(str(CHAMP))
    assert stats.documents_yielded == 270 and not stats.skipped and not stats.coerced
    assert docs[0].doc_id == "champ:1" and docs[-1].doc_id == "champ:270"
    assert count_documents(str(CHAMP)) == 270


def test_hub_offline_is_one_clear_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # Both libraries read these variables once, at import; patch the imported values as well.
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    it = iter_documents("rpt-tests-nonexistent/no-such-dataset", split="test")
    with pytest.raises(RptError) as info:
        next(it)
    msg = str(info.value)
    assert "\n" not in msg and "network" in msg and "local" in msg
    assert "rpt-tests-nonexistent/no-such-dataset" in msg


def test_hub_records_get_hub_ids(monkeypatch: pytest.MonkeyPatch):
    import datasets

    calls = []

    def fake_load(dataset_id, split, streaming):
        calls.append((dataset_id, split, streaming))
        return datasets.Dataset.from_list([rec(), rec(problem=""), rec(problem="third")])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    docs, stats = read("KbsdJames/Omni-MATH", split="test")
    assert calls == [("KbsdJames/Omni-MATH", "test", False)]
    assert [d.doc_id for d in docs] == ["KbsdJames/Omni-MATH:test:0", "KbsdJames/Omni-MATH:test:2"]
    assert stats.skipped == Counter({"empty_field:problem": 1})
    assert stats.as_dict()["skipped"] == {"empty_field:problem": 1}
    assert stats.summary() == "2 documents from 1 file(s) (3 read; skipped: empty_field:problem=1)"
