"""``rpt-data build`` end to end with a tiny random Qwen3 proxy and the real Qwen3 tokenizer on CHAMP text.

The proxy has the real 151,936-row vocabulary (so the real tokenizer fits it) and tiny hidden sizes; its
weights are drawn with std 1.0 so that its entropies spread from ~0 to ~2.7 nats and every filter bites.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import tokenizers
import torch
from click.testing import CliRunner

from rpt_core.data.corpus.documents import Document, content_id
from rpt_core.data.corpus.readers import iter_documents
from rpt_core.data.shards import Manifest, iter_rows, shard_paths
from rpt_core.model import Qwen3Config, Qwen3ForCausalLM
from rpt_core.runtime.cli import RptGroup
from rpt_core.runtime.errors import RptError
from rpt_core.text.tokenizer import Tokenizer
from rpt_data.build import blocks as build_blocks
from rpt_data.build import proxy as proxy_module
from rpt_data.build import sink
from rpt_data.build.pipeline import BuildConfig, build
from rpt_data.build.positions import VAL_MIN_ENTROPY, choose_val_docs
from rpt_data.cli.build import build as build_command
from tests.conftest import CHAMP, QWEN3_TOKENIZER
from tests.helpers import TWO_RANKS

REPO = Path(__file__).resolve().parents[3]
N_DOCS = 24
TEMPLATE = "{problem}"


def tiny_proxy(
    path: Path, vocab_size: int = 151936, tokenizer: Path | None = QWEN3_TOKENIZER, **config
) -> Path:
    torch.manual_seed(0)
    cfg = Qwen3Config.preset(
        "tiny",
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=1024,
        **config,
    )
    model = Qwen3ForCausalLM(cfg)
    model.init_weights(std=1.0)
    model.save_pretrained(path)
    if tokenizer is not None:
        shutil.copy(tokenizer, path / "tokenizer.json")
    return path


@pytest.fixture(scope="module", autouse=True)
def cached_tokenizers():
    """Loading (and fingerprinting) the 11 MB Qwen3 tokenizer takes seconds: do it once per path."""
    cache: dict[str, Tokenizer] = {}
    original = Tokenizer.load.__func__

    def load(cls, path_or_id):
        key = str(Path(path_or_id).resolve())
        if key not in cache:
            cache[key] = original(cls, path_or_id)
        return cache[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(proxy_module.Tokenizer, "load", classmethod(load))
        yield


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("build")


@pytest.fixture(scope="module")
def proxy(work) -> Path:
    return tiny_proxy(work / "proxy")


@pytest.fixture(scope="module")
def corpus(work) -> Path:
    lines = CHAMP.read_text(encoding="utf-8").splitlines()[:N_DOCS]
    path = work / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def make_cfg(proxy, corpus):
    def make(out, **kw) -> BuildConfig:
        base = dict(
            dataset=[str(corpus)],
            proxy_model=str(proxy),
            text_template=TEMPLATE,
            val_docs=4,
            rows_per_shard=100,
            block_docs=5,
            quiet=True,
            out=str(out),
        )
        return BuildConfig(**{**base, **kw})

    return make


@pytest.fixture(scope="module")
def base(work, make_cfg) -> Path:
    """The unfiltered reference build."""
    build(make_cfg(work / "base"))
    return work / "base"


def rows(out: Path, split: str) -> list[dict]:
    return list(iter_rows(shard_paths(out, split, required=False)))


def shard_bytes(out: Path) -> dict[str, bytes]:
    files = {
        p.relative_to(out).as_posix(): p.read_bytes()
        for s in ("train", "val")
        for p in shard_paths(out, s, required=False)
    }
    return {**files, "manifest.json": (out / "manifest.json").read_bytes()}


def build_differences(out: Path, ref: Path) -> list[str]:
    """How OUT's shards and manifest differ from REF's, file by file (empty when byte-identical)."""
    got, want = shard_bytes(out), shard_bytes(ref)
    notes = []
    for name in sorted(n for n in got.keys() | want.keys() if got.get(n) != want.get(n)):
        if name not in got or name not in want:
            notes.append(f"{name}: only in {'the reference' if name in want else 'the resumed build'}")
        elif name == "manifest.json":
            a, b = json.loads(got[name]), json.loads(want[name])
            notes.append(f"{name}: {sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))} differ")
        else:
            a, b = list(iter_rows([out / name])), list(iter_rows([ref / name]))
            bad = [i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y]
            if len(a) != len(b):
                notes.append(f"{name}: {len(a)} rows, reference {len(b)}")
            elif bad:
                cols = sorted(k for k in a[bad[0]] if a[bad[0]][k] != b[bad[0]][k])
                notes.append(f"{name}: rows {bad[:5]}... ({len(bad)}) differ, first in {cols}")
            else:  # same rows, other bytes: another writer (code or pyarrow version), not other numbers
                meta = [pq.ParquetFile(d / name).metadata.created_by for d in (out, ref)]
                notes.append(f"{name}: same rows, other bytes (created_by {meta[0]!r} vs {meta[1]!r})")
    return notes


def documents(corpus: Path) -> dict[str, Document]:
    return {d.doc_id: d for d in iter_documents([str(corpus)], TEMPLATE)}


# ---- what the rows hold ------------------------------------------------------------------------------


def test_hand_checked_document(work, make_cfg):
    corpus = work / "one.jsonl"
    corpus.write_text(json.dumps({"problem": "$x^2+1=5$", "domain": ["Algebra"], "source": "hand"}) + "\n")
    build(make_cfg(work / "one", dataset=[str(corpus)], val_docs=0))
    got = rows(work / "one", "train")
    assert [r["position"] for r in got] == [1, 2, 3, 4, 5, 6, 7]  # "$x" "^" "2" "+" "1" "=" "5" "$"
    assert [r["context"] for r in got] == ["$x", "$x^", "$x^2", "$x^2+", "$x^2+1", "$x^2+1=", "$x^2+1=5"]
    assert got[0]["label"] == b"^2+1=5$" and got[0]["boundaries"] == [1, 2, 3, 4, 5, 6, 7]
    assert got[3]["label"] == b"1=5$" and got[3]["boundaries"] == [1, 2, 3, 4]
    assert got[0]["label_token_ids"] == [61, 17, 10, 16, 28, 20, 3] and got[0]["token_id"] == 61
    assert got[0]["doc_id"] == "one:1" and got[0]["domain"] == ["Algebra"] and got[0]["source"] == "hand"
    assert rows(work / "one", "val") == []


def test_rows_are_the_documents_with_the_proxys_entropies(base, proxy, corpus):
    tok = Tokenizer.load(QWEN3_TOKENIZER)
    model = Qwen3ForCausalLM.from_pretrained(proxy, dtype="float32", device="cpu")
    docs = documents(corpus)
    by_doc: dict[str, list[dict]] = defaultdict(list)
    train = rows(base, "train")
    for r in train + rows(base, "val"):
        by_doc[r["doc_id"]].append(r)
    train_docs = {r["doc_id"] for r in train}
    assert set(by_doc) == set(docs)
    for doc_id, doc_rows in by_doc.items():
        ids, spans = tok.encode_with_spans(docs[doc_id].text)
        data = tok.normalize(docs[doc_id].text).encode()
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0]  # (n, V)
        logp = torch.log_softmax(logits.topk(16, dim=-1).values, dim=-1)  # (n, 16)
        direct = -(logp.exp() * logp).sum(-1)  # (n,): entropy of predicting token t+1
        for r in doc_rows:
            t, ctx = r["position"], r["context"].encode()
            assert len(ctx) == spans[t][0] and data.startswith(ctx + r["label"])
            stop = min(t + 8, len(ids))
            assert r["label_token_ids"] == ids[t:stop]
            assert r["boundaries"] == [spans[j][1] - spans[t][0] for j in range(t, stop)]
            assert r["entropy"] == pytest.approx(float(direct[t - 1]), abs=1e-4)
        split_char = sum(1 for t in range(1, len(ids)) if data[spans[t][0]] & 0xC0 == 0x80)
        if doc_id in train_docs:  # unfiltered train keeps every eligible position
            assert [r["position"] for r in doc_rows] == sorted(r["position"] for r in doc_rows)
            assert len(doc_rows) == len(ids) - 1 - split_char


def test_manifest_and_val_split(base, corpus):
    m = Manifest.read(base).to_dict()
    for key in ("tokenizer_sha256", "tokenizer_fingerprint", "tokenizer_base_vocab_fingerprint"):
        assert len(m[key]) == 64
    assert m["tokenizer_base_vocab_fingerprint"] == Tokenizer.load(QWEN3_TOKENIZER).base_vocab_fingerprint
    assert set(m["proxy"]) >= {"id", "config_sha256", "weights_sha256"} and m["world_size"] == 1
    c = m["counts"]
    train, val = rows(base, "train"), rows(base, "val")
    assert c["documents_read"] == c["documents_used"] == N_DOCS and c["documents_val"] == 4
    assert c["positions_kept"] == {"train": len(train), "val": len(val)}
    # The val floor dropped some positions (no train threshold here, so every below_threshold is val's).
    assert c["positions_skipped"]["below_threshold"] > 0
    assert c["positions_scored"]["val"] == len(val) + c["positions_skipped"]["below_threshold"]
    assert min(r["entropy"] for r in val) >= VAL_MIN_ENTROPY > min(r["entropy"] for r in train)
    val_ids = {r["doc_id"] for r in val}
    docs = documents(corpus)
    assert val_ids == choose_val_docs(((d, content_id(docs[d].text)) for d in docs), 4, seed=0).doc_ids
    assert not val_ids & {r["doc_id"] for r in train}
    shards = m["shards"]
    assert [s["rows"] for s in shards if s["split"] == "train"][:-1] == [100] * (len(train) // 100)
    assert sum(s["rows"] for s in shards) == len(train) + len(val)


# ---- filters ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("threshold", "min_context"), [(2.0, None), (None, 6), (2.0, 6)])
def test_filters(base, work, make_cfg, threshold, min_context):
    out = work / f"filtered-{threshold}-{min_context}"
    build(make_cfg(out, entropy_threshold=threshold, min_context_tokens=min_context))
    ok_ctx = lambda r: min_context is None or r["n_context_tokens"] >= min_context
    ok_ent = lambda r: threshold is None or r["entropy"] >= threshold
    expected_train = [r for r in rows(base, "train") if ok_ctx(r) and ok_ent(r)]
    assert rows(out, "train") == expected_train and 0 < len(expected_train) < len(rows(base, "train"))
    assert rows(out, "val") == [r for r in rows(base, "val") if ok_ctx(r)]  # val ignores the threshold


def test_cap_keeps_each_documents_highest_entropies(base, work, make_cfg):
    build(make_cfg(work / "capped", max_samples_per_doc=3))
    base_by_doc = defaultdict(list)
    for r in rows(base, "train"):
        base_by_doc[r["doc_id"]].append(r)
    expected = []
    for doc_rows in base_by_doc.values():
        top = sorted(doc_rows, key=lambda r: (-r["entropy"], r["position"]))[:3]
        expected += sorted(top, key=lambda r: r["position"])
    assert rows(work / "capped", "train") == expected
    assert rows(work / "capped", "val") == rows(base, "val")


# ---- determinism, resume ----------------------------------------------------------------------------


def test_two_runs_are_byte_identical(base, work, make_cfg, monkeypatch):
    # Internal buffering (row chunks, Arrow chunks) must not show in the bytes either.
    monkeypatch.setattr(build_blocks, "ROW_CHUNK", 7)
    monkeypatch.setattr(sink, "ARROW_CHUNK", 13)
    build(make_cfg(work / "again"))
    assert shard_bytes(work / "again") == shard_bytes(base)


@pytest.mark.parametrize("crash_in", ["checkpoint", "shard_write"])
def test_resume_after_a_crash_is_byte_identical(base, work, make_cfg, monkeypatch, crash_in):
    out = work / f"crash-{crash_in}"
    calls = 0
    if crash_in == "checkpoint":  # dies right after the second checkpoint
        original = sink.ShardSink.checkpoint

        def crashing(self):
            nonlocal calls
            original(self)
            calls += 1
            if calls == 2:
                raise RuntimeError("injected crash")

        monkeypatch.setattr(sink.ShardSink, "checkpoint", crashing)
    else:  # dies after writing the fourth shard, before the state knows it
        original = sink.write_shard

        def crashing(path, table):
            nonlocal calls
            original(path, table)
            calls += "pending" not in Path(path).name
            if calls == 4:
                raise RuntimeError("injected crash")

        monkeypatch.setattr(sink, "write_shard", crashing)
    with pytest.raises(RuntimeError, match="injected"):
        build(make_cfg(out))
    assert not (out / "manifest.json").exists() and (out / ".state" / "rank-00000.json").exists()
    state = json.loads((out / ".state" / "rank-00000.json").read_text())
    assert 0 < state["next_block"] < 5 and state["pending"]  # mid-build, with rows waiting in a spill
    monkeypatch.undo()
    build(make_cfg(out))
    assert shard_bytes(out) == shard_bytes(base)
    assert not list((out / ".state").glob("*pending*"))


KILLED_RUN = textwrap.dedent("""
    import json, sys, time
    from rpt_data.build import sink
    from rpt_data.build.pipeline import BuildConfig, build
    original = sink.ShardSink.checkpoint
    def hang(self):
        original(self)
        print("checkpointed", flush=True)
        time.sleep(120)
    sink.ShardSink.checkpoint = hang
    build(BuildConfig(**json.loads(sys.argv[1])))
""")


def test_resume_after_sigkill(base, work, make_cfg):
    out = work / "killed"
    cfg = make_cfg(out)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, json.dumps(cfg.__dict__)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout.readline().strip() == "checkpointed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not (out / "manifest.json").exists()
    build(cfg)
    assert not (diff := build_differences(out, base)), diff


# Every file a build writes is committed by one os.replace (rpt_core.runtime.files.atomic_path): dying right
# before or right after the n-th commit of a file visits each state a SIGKILL can leave on disk.
KILLED_AT = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    when, name, nth = sys.argv[2], sys.argv[3], int(sys.argv[4])
    real, seen = os.replace, 0
    def replace(src, dst, *args, **kwargs):
        global seen
        hit = Path(dst).name == name and (seen := seen + 1) == nth
        if hit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst, *args, **kwargs)
        if hit and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
    from rpt_data.build.pipeline import BuildConfig, build
    build(BuildConfig(**json.loads(sys.argv[1])))
""")


def all_files(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("when", "name", "nth"),
    [
        ("before", "config.json", 1),  # the very first write: .state holds only its temp file
        ("before", "train-00000-00002.parquet", 1),  # a shard's temp file is written, not yet renamed
        ("after", "train-00000-00002.parquet", 1),  # a shard the state does not list yet
        ("before", "rank-00000.json", 2),  # the 2nd checkpoint's spills are written, its state is not
        ("after", "rank-00000.json", 2),  # its state is written, the 1st checkpoint's spills not removed
        ("after", "rank-00000.json", 6),  # the final state (done); the same, then no checkpoint follows
        ("before", "manifest.json", 1),
    ],
)
def test_sigkill_at_each_commit_resumes_to_the_same_files(base, work, make_cfg, when, name, nth):
    out = work / f"killed-{when}-{name}-{nth}"
    cfg = make_cfg(out)
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_AT, json.dumps(cfg.__dict__), when, name, str(nth)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-4000:]
    assert not (out / "manifest.json").exists()
    build(cfg)
    assert not (diff := build_differences(out, base)), diff
    # Nothing left over: no temp file of a write cut short, no spill the final state does not name.
    assert all_files(out) == all_files(base)


# ---- reruns and config ------------------------------------------------------------------------------


def test_rerun_is_a_noop_and_another_config_is_refused(base, work, make_cfg, capsys):
    out = work / "rerun"
    shutil.copytree(base, out)
    before = shard_bytes(out)
    summary = build(make_cfg(out, quiet=False))
    assert summary.already_complete and "already complete" in capsys.readouterr().out
    with pytest.raises(RptError, match=r"different config \(entropy_threshold: None -> 2\.5\).*--overwrite"):
        build(make_cfg(out, entropy_threshold=2.5))
    assert shard_bytes(out) == before
    summary = build(make_cfg(out, entropy_threshold=2.5, overwrite=True, quiet=False))
    printed = capsys.readouterr().out
    assert not summary.already_complete and "positions scored" in printed and "tokens/s" in printed
    assert Manifest.read(out).to_dict()["entropy_threshold"] == 2.5
    assert all(r["entropy"] >= 2.5 for r in rows(out, "train"))


def test_cli_options_override_the_toml_recipe(base, work, corpus, proxy):
    main = RptGroup("rpt-data", commands=[build_command])  # as rpt_data.cli registers it
    recipe = work / "recipe.toml"
    recipe.write_text(
        f'[data]\ndataset = ["{corpus}"]\nproxy_model = "{proxy}"\ntext_template = "{TEMPLATE}"\n'
        "val_docs = 2\nrows_per_shard = 100\nblock_docs = 5\nseed = 3\n"
    )
    out = work / "cli"
    result = CliRunner().invoke(
        main,
        ["build", "--config", str(recipe), "--out", str(out), "--val-docs", "4", "--seed", "0", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert shard_bytes(out) == shard_bytes(base)  # == the reference config
    result = CliRunner().invoke(main, ["build", "--config", str(recipe), "--out", str(out), "--quiet"])
    assert (
        result.exit_code == 1 and "different config" in result.output and "val_docs: 4 -> 2" in result.output
    )


# ---- bad input and bad setups -----------------------------------------------------------------------


def test_bad_records_are_counted_and_strict_fails(work, make_cfg):
    good = CHAMP.read_text(encoding="utf-8").splitlines()[:6]
    bad = [
        "{not json",
        json.dumps({"problem": None}),
        json.dumps({"problem": "  "}),
        "[1, 2]",
        json.dumps({"problem": "a"}),
    ]
    corpus = work / "bad.jsonl"
    corpus.write_text("\n".join(good[:3] + bad + good[3:]) + "\n", encoding="utf-8")
    out = work / "bad"
    build(make_cfg(out, dataset=[str(corpus)], val_docs=1))
    c = Manifest.read(out).to_dict()["counts"]
    assert c["documents_read"] == 11 and c["documents_used"] == 6
    reasons = ["malformed_json", "missing_field:problem", "empty_field:problem", "not_an_object", "too_short"]
    assert c["documents_skipped"] == dict.fromkeys(reasons, 1)
    with pytest.raises(RptError, match="strict"):
        build(make_cfg(work / "strict", dataset=[str(corpus)], val_docs=1, strict=True))
    only_bad = work / "only_bad.jsonl"
    only_bad.write_text("\n".join(bad[:-1]) + "\n", encoding="utf-8")
    with pytest.raises(RptError, match="no usable documents"):
        build(make_cfg(work / "none1", dataset=[str(only_bad)], val_docs=1))
    only_bad.write_text("\n".join(bad) + "\n", encoding="utf-8")  # + one document too short to use
    with pytest.raises(RptError, match="no usable training rows"):
        build(make_cfg(work / "none2", dataset=[str(only_bad)], val_docs=0))
    with pytest.raises(RptError, match="hold out all"):
        build(make_cfg(work / "allval", val_docs=N_DOCS))


def test_tokenizer_must_be_the_proxys(work, make_cfg, corpus):
    small = tiny_proxy(work / "small-vocab", vocab_size=2048, tokenizer=None)
    with pytest.raises(RptError, match="pass --tokenizer"):
        build(make_cfg(work / "t1", proxy_model=str(small)))
    with pytest.raises(RptError, match="embeds only 2048"):
        build(make_cfg(work / "t2", proxy_model=str(small), tokenizer=str(QWEN3_TOKENIZER)))
    llama_ids = tiny_proxy(work / "llama-ids", tokenizer=None, bos_token_id=128000, eos_token_id=128001)
    with pytest.raises(RptError, match="bos_token_id 128000, .*different model families"):
        build(make_cfg(work / "t4", proxy_model=str(llama_ids), tokenizer=str(QWEN3_TOKENIZER)))
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator([d.text for d in documents(corpus).values()], trainer)
    bpe.save(str(work / "other.json"))
    with pytest.raises(RptError, match="different base vocabulary"):
        build(make_cfg(work / "t3", tokenizer=str(work / "other.json")))


# ---- two ranks --------------------------------------------------------------------------------------

RANK_RUN = textwrap.dedent("""
    import json, sys
    from rpt_data.build.pipeline import BuildConfig, build
    build(BuildConfig(**json.loads(sys.argv[1])))
""")


def test_two_ranks_make_the_same_rows_as_one(base, work, make_cfg):
    out = work / "ranks"
    script = work / "rank_run.py"
    script.write_text(RANK_RUN)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [*TWO_RANKS, str(script), json.dumps(make_cfg(out).__dict__)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-6000:]
    m, ref = Manifest.read(out).to_dict(), Manifest.read(base).to_dict()
    assert m["world_size"] == 2 and {s["rank"] for s in m["shards"]} == {0, 1}
    assert all(Path(s["path"]).name.startswith(f"{s['split']}-{s['rank']:05d}-") for s in m["shards"])
    assert m["counts"] == ref["counts"]
    for split in ("train", "val"):
        key = lambda r: (r["doc_id"], r["position"])
        got = sorted(rows(out, split), key=key)
        want = sorted(rows(base, split), key=key)
        assert [{**r, "entropy": 0} for r in got] == [{**r, "entropy": 0} for r in want]
        np.testing.assert_allclose([r["entropy"] for r in got], [r["entropy"] for r in want], atol=1e-5)
    assert Counter(r["doc_id"] for r in rows(out, "val")) == Counter(r["doc_id"] for r in rows(base, "val"))
