"""``rpt-data build`` carries each position's span class into the shards and counts kept rows by class.

A byte-level BPE trained on the first SynthMath records (Qwen's pre-tokenizer: digits are single tokens)
and a tiny random proxy; every position is kept so each class shows up.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rpt_core.data.corpus.readers import iter_documents
from rpt_core.data.corpus.spans import CLASSES, COMPUTED, COMPUTED_OP, GIVEN, TEXT
from rpt_core.data.shards import iter_rows, shard_paths
from rpt_core.model import Qwen3Config, Qwen3ForCausalLM
from rpt_data.build.pipeline import BuildConfig, build
from rpt_data.tokenizer_train import train_tokenizer

REPO = Path(__file__).resolve().parents[3]
SYNTH = REPO / "data" / "synthmath.jsonl"
N_DOCS = 12


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("classes")
    lines = SYNTH.read_text(encoding="utf-8").splitlines()[:N_DOCS]
    (work / "synth.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plain = [json.dumps({k: v for k, v in json.loads(x).items() if k != "spans"}) for x in lines]
    (work / "plain.jsonl").write_text("\n".join(plain) + "\n", encoding="utf-8")
    texts = [d.text for d in iter_documents([str(SYNTH)], max_warnings=0)][:300]
    tok = train_tokenizer(texts, vocab_size=300)
    proxy = work / "proxy"
    torch.manual_seed(0)
    cfg = Qwen3Config.preset(
        "tiny",
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=1024,
    )
    Qwen3ForCausalLM(cfg).save_pretrained(proxy)
    tok.save(str(proxy / "tokenizer.json"))
    return work


def run_build(work: Path, corpus: str, out: str) -> Path:
    cfg = BuildConfig(
        dataset=[str(work / corpus)],
        proxy_model=str(work / "proxy"),
        out=str(work / out),
        val_docs=2,
        entropy_threshold=None,
        quiet=True,
        device="cpu",
    )
    build(cfg)
    return work / out


def expected_class(doc, context: str, first_token: bytes) -> str:
    """The rule written out independently: the first span sharing a character with the first token."""
    start = len(context)  # SynthMath is ASCII: bytes are characters
    chars = set(range(start, start + len(first_token)))
    for s, e, cls in doc.spans:
        if chars & set(range(s, e)):
            return cls
    return TEXT


def test_every_row_carries_its_first_tokens_class(work):
    out = run_build(work, "synth.jsonl", "with")
    docs = {d.doc_id: d for d in iter_documents([str(work / "synth.jsonl")])}
    seen = {}
    for split in ("train", "val"):
        for row in iter_rows(shard_paths(out, split)):
            first = bytes(row["label"])[: row["boundaries"][0]]
            want = expected_class(docs[row["doc_id"]], row["context"], first)
            assert row["span_class"] == want, (row["context"][-20:], first)
            seen[want] = first
    assert set(seen) == set(CLASSES)
    assert seen[GIVEN].isdigit() and seen[COMPUTED_OP].isdigit()
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    by_class = counts["positions_kept_by_class"]
    for split in ("train", "val"):
        assert sum(by_class[split].values()) == counts["positions_kept"][split] > 0
    assert by_class["train"][COMPUTED] > 0


def test_a_corpus_without_spans_gives_null_classes(work):
    out = run_build(work, "plain.jsonl", "without")
    rows = list(iter_rows(shard_paths(out, "train")))
    assert rows and all(r["span_class"] is None for r in rows)
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["positions_kept_by_class"]["train"] == {"none": counts["positions_kept"]["train"]}


def test_the_summary_prints_kept_rows_by_class(work, capsys):
    cfg = BuildConfig(
        dataset=[str(work / "synth.jsonl")],
        proxy_model=str(work / "proxy"),
        out=str(work / "with"),
        val_docs=2,
        device="cpu",
    )
    build(cfg)  # complete already: prints the stored summary
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "train positions kept by class: " in x)
    assert [kv.split("=")[0] for kv in line.split(": ")[1].split(", ")] == list(CLASSES)  # report order
