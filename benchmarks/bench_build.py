"""Benchmark: ``rpt-data build`` end to end vs the proxy forward alone, and peak memory vs corpus size.

Not a test. Documents are GSM8K train records (``problem\\n\\nsolution``) from data/gsm8k_train.jsonl,
tokenized with the real Qwen3 tokenizer; the proxy is a small random Qwen3 (4 layers, hidden 256, 4 heads / 2
KV heads of 64, MLP 768, tied, vocab 151,936) saved to a temp dir. Every position is kept (no threshold), the
worst case for the pipeline around the model: every scored token becomes a Parquet row.

1. Build throughput: ``build()`` in a child process, tokens scored / wall seconds of the whole build (startup
   included) and of the block loop alone (the part that grows with the corpus).
2. Forward alone: the same documents in the same blocks through ``ProxyScorer.score`` only (tokenization
   not timed), in a child process. Pipeline overhead = build loop seconds / forward seconds - 1.
3. Peak RSS: a build of the corpus and one of 8 concatenated copies, each in its own child process, peak
   resident memory read with ``os.wait4`` (the child's own ``ru_maxrss``, what ``RUSAGE_CHILDREN`` reports
   for a single child). Target ratio <= 1.2.

    .venv/bin/python benchmarks/bench_build.py --quick          # 100 documents, 2x: a smoke run
    .venv/bin/python benchmarks/bench_build.py --docs 1000      # first 1000 documents (8x = 8000)
    .venv/bin/python benchmarks/bench_build.py                  # the whole file (slow on CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO / "data" / "gsm8k_train.jsonl"
QWEN3_TOKENIZER = REPO / "tests" / "fixtures" / "qwen3" / "tokenizer.json"


def make_proxy(path: Path) -> None:
    import torch

    from rpt_core.model import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3Config.preset(
        "tiny",
        vocab_size=151936,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        tie_word_embeddings=True,
        max_position_embeddings=4096,
        eos_token_id=None,
    )
    Qwen3ForCausalLM(cfg).save_pretrained(path)
    shutil.copy(QWEN3_TOKENIZER, path / "tokenizer.json")


def write_corpus(path: Path, docs: int | None, copies: int) -> None:
    lines = [line for line in GSM8K.read_text(encoding="utf-8").splitlines() if line.strip()]
    lines = lines[:docs] if docs else lines
    path.write_text("\n".join(lines * copies) + "\n", encoding="utf-8")


# ---- child processes ----------------------------------------------------------------------------------


def child_build(args: dict) -> dict:
    from rpt_data.build.pipeline import BuildConfig, build

    summary = build(BuildConfig(**args))
    rows = sum(summary.counts["positions_kept"].values())
    return {
        "seconds": summary.seconds,
        "proxy_seconds": summary.proxy_seconds,
        "tokens": summary.tokens_this_run,
        "rows": rows,
    }


def child_forward(args: dict) -> dict:
    """The build's blocks through ``ProxyScorer.score`` only."""
    import itertools

    from rpt_core.data.corpus.readers import iter_documents
    from rpt_core.model import Qwen3ForCausalLM
    from rpt_core.text.tokenizer import Tokenizer
    from rpt_data.build.entropy import ProxyScorer

    tok = Tokenizer.load(args["proxy_model"])
    model = Qwen3ForCausalLM.from_pretrained(args["proxy_model"], dtype="float32", device=args["device"])
    scorer = ProxyScorer(model, batch_tokens=args["batch_tokens"])
    docs = iter_documents(args["dataset"], warn=lambda _: None)
    tokens = 0
    while block := list(itertools.islice(docs, args["block_docs"])):
        ids = [i for i in tok.encode_batch([d.text for d in block]) if len(i) >= 2]
        scorer.score(ids)
        tokens += sum(map(len, ids))
    return {"seconds": scorer.forward_seconds, "tokens": tokens}


def run_child(kind: str, args: dict) -> tuple[dict, float]:
    """Run one measurement in a fresh interpreter; its result and its peak RSS in MiB."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", kind, json.dumps(args)], stdout=subprocess.PIPE
    )
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed with exit code {proc.returncode}")
    return json.loads(out.decode().strip().splitlines()[-1]), usage.ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="100 documents, 2x instead of 8x for memory")
    p.add_argument("--docs", type=int, default=None, help="first N GSM8K records (default: all 7,473)")
    p.add_argument("--scale", type=int, default=8, help="copies of the corpus for the memory comparison")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-tokens", type=int, default=16384)
    p.add_argument("--block-docs", type=int, default=256)
    p.add_argument("--rows-per-shard", type=int, default=10000)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        fn = {"build": child_build, "forward": child_forward}[a.child[0]]
        print(json.dumps(fn(json.loads(a.child[1]))), flush=True)
        return
    docs, scale = (100, 2) if a.quick else (a.docs, a.scale)
    with tempfile.TemporaryDirectory(prefix="bench_build.") as tmp:
        tmp = Path(tmp)
        make_proxy(tmp / "proxy")
        write_corpus(tmp / "c1.jsonl", docs, 1)
        write_corpus(tmp / "cN.jsonl", docs, scale)
        common = dict(
            proxy_model=str(tmp / "proxy"),
            device=a.device,
            batch_tokens=a.batch_tokens,
            val_docs=20,
            block_docs=a.block_docs,
            rows_per_shard=a.rows_per_shard,
            quiet=True,
        )
        t0 = time.perf_counter()
        fwd, fwd_rss = run_child("forward", {**common, "dataset": [str(tmp / "c1.jsonl")]})
        b1, rss1 = run_child("build", {**common, "dataset": [str(tmp / "c1.jsonl")], "out": str(tmp / "o1")})
        bN, rssN = run_child("build", {**common, "dataset": [str(tmp / "cN.jsonl")], "out": str(tmp / "oN")})
        wall = time.perf_counter() - t0
    n = docs or "all"
    fwd_rate = fwd["tokens"] / fwd["seconds"]
    lines = [
        f"corpus: GSM8K train, first {n} records; proxy 4x256 random Qwen3, vocab 151,936; device {a.device}",
        f"forward alone    : {fwd['tokens']:>9,} tokens in {fwd['seconds']:7.1f} s = {fwd_rate:>7,.0f} tok/s",
    ]
    for name, b in (("build 1x", b1), (f"build {scale}x", bN)):
        lines.append(
            f"{name:<17}: {b['tokens']:>9,} tokens in {b['seconds']:7.1f} s = "
            f"{b['tokens'] / b['seconds']:>7,.0f} tok/s, {b['rows']:,} rows; its own forward "
            f"{b['proxy_seconds']:.1f} s -> overhead {100 * (b['seconds'] / b['proxy_seconds'] - 1):.1f}%"
        )
    whole = b1["seconds"] / fwd["seconds"] - 1
    marginal = (bN["seconds"] - b1["seconds"]) / (bN["proxy_seconds"] - b1["proxy_seconds"]) - 1
    lines += [
        f"pipeline overhead, whole 1x build vs the forward-alone run: {100 * whole:.1f}%",
        f"pipeline overhead, marginal ({scale}x minus 1x, fixed startup excluded): {100 * marginal:.1f}%",
        f"peak RSS: forward alone {fwd_rss:,.0f} MiB; build 1x {rss1:,.0f} MiB; "
        f"build {scale}x {rssN:,.0f} MiB -> ratio {rssN / rss1:.2f}",
    ]
    print("\n".join(lines))
    print(f"benchmark wall time {wall:.0f} s")


if __name__ == "__main__":
    main()
