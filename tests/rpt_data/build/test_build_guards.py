"""What ``rpt-data build`` refuses so that nothing is silently wrong: inputs that changed under a build,
a second build on the same OUT, a top-k beyond the vocabulary, copies of a document on both sides of the
split; and a failed build leaves OUT as it was.

A tiny proxy (the tiny task's tokenizer and model: 18 tokens) on a corpus of letters keeps every build to a
second or two.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rpt_core.data.corpus.documents import content_id
from rpt_core.data.corpus.readers import iter_documents
from rpt_core.data.shards import Manifest, check_context_cap
from rpt_core.runtime.errors import RptError
from rpt_data.build import sink
from rpt_data.build.pipeline import BuildConfig, build
from tests.helpers import LETTERS, save_model_dir, tiny_tokenizer

REPO = Path(__file__).resolve().parents[3]


def write_corpus(path: Path, n: int = 12, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = [
        json.dumps({"problem": "".join(" " + rng.choice(LETTERS) for _ in range(20)), "solution": "-"})
        for _ in range(n)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def proxy(tmp_path_factory) -> Path:
    return save_model_dir(tmp_path_factory.mktemp("proxy") / "proxy", tiny_tokenizer())


def config(proxy: Path, corpus: Path, out: Path, **kw) -> BuildConfig:
    base = dict(
        dataset=[str(corpus)],
        proxy_model=str(proxy),
        text_template="{problem}",
        val_docs=2,
        rows_per_shard=50,
        block_docs=4,
        quiet=True,
        out=str(out),
    )
    return BuildConfig(**{**base, **kw})


def test_the_manifest_records_every_inputs_fingerprint(proxy, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    build(config(proxy, corpus, tmp_path / "out"))
    (record,) = Manifest.read(tmp_path / "out").inputs
    assert record["path"] == str(corpus) and record["size"] == corpus.stat().st_size
    assert len(record["sha256"]) == 64 and record["key"] == "corpus" and record["mtime"]


def test_a_finished_build_whose_input_changed_is_not_already_complete(proxy, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "out"
    build(config(proxy, corpus, out))
    os.utime(corpus, (1, 1))  # touched, same bytes: still the same build
    assert build(config(proxy, corpus, out)).already_complete
    write_corpus(corpus, seed=1)  # new text, same number of documents
    with pytest.raises(
        RptError, match=rf"the input {corpus} changed .* since this build completed.*--overwrite"
    ):
        build(config(proxy, corpus, out))
    summary = build(config(proxy, corpus, out, overwrite=True))
    assert not summary.already_complete
    assert (
        Manifest.read(out).inputs[0]["sha256"]
        == json.loads((out / ".state" / "inputs.json").read_text())[0]["sha256"]
    )


def test_a_build_resumed_after_its_input_changed_stops(proxy, tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "out"
    original = sink.ShardSink.checkpoint

    def crash_after_one(self):
        original(self)
        raise RuntimeError("injected crash")

    monkeypatch.setattr(sink.ShardSink, "checkpoint", crash_after_one)
    with pytest.raises(RuntimeError, match="injected"):
        build(config(proxy, corpus, out))
    monkeypatch.undo()
    assert (out / ".state" / "rank-00000.json").is_file() and not (out / "manifest.json").exists()
    with corpus.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"problem": " a b c d e f", "solution": "-"}) + "\n")
    with pytest.raises(
        RptError, match=rf"the input {corpus} changed \(size \d+ -> \d+ bytes.*since this build started"
    ):
        build(config(proxy, corpus, out))


def test_a_file_added_to_a_directory_input_is_a_change(proxy, tmp_path):
    data = tmp_path / "data"
    write_corpus(data / "a.jsonl")
    out = tmp_path / "out"
    build(config(proxy, data, out))
    write_corpus(data / "b.jsonl", seed=2)
    with pytest.raises(RptError, match=r"b\.jsonl is a new input since this build completed"):
        build(config(proxy, data, out))


def test_copies_of_a_document_stay_on_one_side_of_the_split_and_are_counted(proxy, tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.jsonl", n=5)
    lines = corpus.read_text().splitlines()
    spaced = [json.dumps({**json.loads(ln), "problem": json.loads(ln)["problem"] + "  "}) for ln in lines]
    corpus.write_text("\n".join(lines + spaced) + "\n")  # each written twice (one with trailing spaces)
    out = tmp_path / "out"
    summary = build(config(proxy, corpus, out, quiet=False, val_docs=3))  # odd: ids alone must split a pair
    text = {d.doc_id: content_id(d.text) for d in iter_documents([str(corpus)], "{problem}")}
    train, val = ({text[r["doc_id"]] for r in pq.read_table(out / s).to_pylist()} for s in ("train", "val"))
    assert not val & train and len(val) == 3  # before: a copy of a held-out text was trained on
    m = Manifest.read(out)
    assert m.counts["documents_duplicate"] == 5 and m.counts["documents_val"] == 6  # 3 texts, 2 copies each
    assert len(m.val_content_ids) == 3 and len(m.val_doc_ids) == 6
    assert summary.counts["documents_duplicate"] == 5
    assert "5 duplicates of another's text" in capsys.readouterr().out


def test_a_long_documents_rows_hold_at_most_max_context_tokens(proxy, tmp_path):
    corpus = tmp_path / "long.jsonl"
    rng = random.Random(0)
    long = "".join(" " + rng.choice(LETTERS) for _ in range(3000))
    corpus.write_text("".join(json.dumps({"problem": p, "solution": "-"}) + "\n" for p in [long, " a b c d"]))
    out = tmp_path / "out"
    build(config(proxy, corpus, out, val_docs=0, max_context_tokens=64, rows_per_shard=5000))
    rows = pq.read_table(out / "train", columns=["position", "context", "n_context_tokens"]).to_pylist()
    assert max(r["position"] for r in rows) > 2000 and max(r["n_context_tokens"] for r in rows) == 64
    assert all(r["n_context_tokens"] == min(r["position"], 64) for r in rows)
    assert max(len(r["context"]) for r in rows) <= 64 * 4  # a token here is at most " x x" (4 characters)
    manifest = Manifest.read(out)
    assert manifest.max_context_tokens == 64 and manifest.config["max_context_tokens"] == 64
    said: list[str] = []
    check_context_cap(manifest, 1024, said.append)  # the trainer and the export say it once
    assert said == [
        "--max-prompt-tokens 1024: the shards' contexts hold at most 64 tokens "
        "(max_context_tokens of their build); prompts are no longer than that"
    ]


def test_a_failed_build_leaves_no_state_behind(proxy, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"problem": "a"}) + "\n")  # one document, too short to use
    out = tmp_path / "new" / "out"
    with pytest.raises(RptError, match="hold out all|no usable"):
        build(config(proxy, empty, out))
    assert not out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(RptError):
        build(config(proxy, empty, existing))
    assert list(existing.iterdir()) == []
    corpus = write_corpus(tmp_path / "corpus.jsonl")  # the same OUT then builds with another config
    build(config(proxy, corpus, existing, val_docs=1))
    assert (existing / "manifest.json").is_file()


def test_top_k_beyond_the_vocabulary_is_refused(proxy, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    with pytest.raises(RptError, match=r"--top-k 1000 is larger than the proxy's vocabulary \(18 tokens\)"):
        build(config(proxy, corpus, tmp_path / "out", top_k=1000))


SLOW_BUILD = textwrap.dedent("""
    import json, sys, time
    from rpt_data.build import pipeline as b
    from rpt_core.runtime.errors import RptError
    real = b.choose_val
    def slow(cfg):  # holds the lock for a while, so the two builds overlap
        time.sleep(3)
        return real(cfg)
    b.choose_val = slow
    try:
        b.build(b.BuildConfig(**json.loads(sys.argv[1])))
        print("built")
    except RptError as e:
        print("refused:", e)
""")


def test_two_builds_started_together_on_one_out(proxy, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    cfg = json.dumps(config(proxy, corpus, tmp_path / "out").__dict__)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", SLOW_BUILD, cfg]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = sorted(p.communicate(timeout=120)[0].strip().splitlines()[-1] for p in procs)
    assert outputs[0] == "built", outputs
    assert outputs[1].startswith("refused:") and "is in use by rpt-data build (pid" in outputs[1], outputs
