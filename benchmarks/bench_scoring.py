"""Benchmark: proxy entropy scoring throughput, ``rpt_data.build.entropy.ProxyScorer`` vs plain transformers.

Not a test. Documents are GSM8K train records (problem + "\\n\\n" + solution) from data/gsm8k_train.jsonl,
tokenized with the real Qwen3 tokenizer. The proxy is a small random Qwen3 (4 layers, hidden 256, 4 heads / 2
KV heads of 64, MLP 768, tied, vocab 151,936): with such a small body the LM head and the top-k over 151,936
logits are most of the work, which is exactly what the scorer optimises.

The baseline is what a user would write with transformers: the same checkpoint loaded with
``transformers.Qwen3ForCausalLM.from_pretrained``, documents in corpus order in padded batches with an
attention mask, ``model(...).logits``, then ``torch.topk(16)`` and the softmax entropy.

    .venv/bin/python benchmarks/bench_scoring.py --docs 1000 --dtype bfloat16
    .venv/bin/python benchmarks/bench_scoring.py --quick --no-hf --sweep-batch-tokens 2048,4096,8192,32768
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rpt_core.model import Qwen3Config, Qwen3ForCausalLM
from rpt_data.build.entropy import ProxyScorer

REPO = Path(__file__).resolve().parents[1]
TOP_K = 16


def load_docs(n: int) -> list[list[int]]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(REPO / "tests" / "fixtures" / "qwen3" / "tokenizer.json"))
    texts = []
    with open(REPO / "data" / "gsm8k_train.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            texts.append(rec["problem"] + "\n\n" + rec["solution"])
            if len(texts) == n:
                break
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def make_checkpoint(path: Path) -> None:
    cfg = Qwen3Config(
        vocab_size=151936,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg)
    with (
        torch.no_grad()
    ):  # a spread of entropies instead of near-uniform top-16 (tied: scales embeddings too)
        model.lm_head.weight.mul_(3.0)
    model.save_pretrained(path)


def ours_fn(model, batch_tokens: int, chunk_positions: int):
    def run(docs):
        return ProxyScorer(
            model, top_k=TOP_K, batch_tokens=batch_tokens, chunk_positions=chunk_positions
        ).score(docs)

    return run


def hf_fn(model, batch_size: int):
    def run(docs):
        out = []
        with torch.inference_mode():
            for b0 in range(0, len(docs), batch_size):
                batch = docs[b0 : b0 + batch_size]
                T = max(len(d) for d in batch)
                ids = torch.zeros(len(batch), T, dtype=torch.long)  # (B, T) right-padded
                mask = torch.zeros(len(batch), T, dtype=torch.long)
                for r, d in enumerate(batch):
                    ids[r, : len(d)] = torch.tensor(d)
                    mask[r, : len(d)] = 1
                logits = model(input_ids=ids, attention_mask=mask).logits.float()  # (B, T, V)
                logp = F.log_softmax(logits.topk(TOP_K, dim=-1).values, dim=-1)  # (B, T, k)
                ent = -(logp.exp() * logp).sum(-1)  # (B, T)
                for r, d in enumerate(batch):
                    e = np.full(len(d), np.nan, dtype=np.float32)
                    e[1:] = ent[r, : len(d) - 1].numpy()
                    out.append(e)
        return out

    return run


def interleaved(contenders: dict, docs: list[list[int]], rounds: int) -> tuple[dict, dict, dict]:
    """Run every contender on each slice of the docs in turn (rotating who goes first).

    The machine is shared, so the load drifts; interleaving lets every contender see the same drift.
    Returns wall seconds, process CPU seconds and the entropies per contender.
    """
    wall = dict.fromkeys(contenders, 0.0)
    cpu = dict.fromkeys(contenders, 0.0)
    ents: dict[str, list[np.ndarray]] = {k: [] for k in contenders}
    names = list(contenders)
    step = -(-len(docs) // rounds)
    for r in range(rounds):
        part = docs[r * step : (r + 1) * step]
        for name in names[r % len(names) :] + names[: r % len(names)]:
            w0, c0 = time.perf_counter(), time.process_time()
            ents[name] += contenders[name](part)
            wall[name] += time.perf_counter() - w0
            cpu[name] += time.process_time() - c0
    return wall, cpu, ents


def max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(
        (float(np.abs(x[1:] - y[1:]).max()) for x, y in zip(a, b, strict=True) if len(x) > 1), default=0
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--quick", action="store_true", help="100 documents, 2 rounds")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds (the CPU is shared)")
    ap.add_argument("--batch-tokens", type=int, default=16384)
    ap.add_argument("--chunk-positions", type=int, default=1024)
    ap.add_argument("--hf-batch", type=int, default=8, help="documents per transformers batch")
    ap.add_argument("--no-hf", action="store_true", help="skip the transformers baseline")
    ap.add_argument("--sweep-batch-tokens", default="", help="comma list: ProxyScorer at each value")
    ap.add_argument("--sweep-chunk", default="", help="comma list: also time ProxyScorer at each chunk size")
    args = ap.parse_args()
    n_docs, rounds = (100, 2) if args.quick else (args.docs, args.rounds)
    dtype = getattr(torch, args.dtype)

    docs = load_docs(n_docs)
    n_tok = sum(len(d) for d in docs)
    lens = np.array([len(d) for d in docs])
    print(
        f"{len(docs)} GSM8K docs, {n_tok} tokens (len mean {lens.mean():.0f}, max {lens.max()}), "
        f"dtype {args.dtype}, torch threads {torch.get_num_threads()}, {rounds} rounds"
    )

    with tempfile.TemporaryDirectory() as tmp:
        make_checkpoint(Path(tmp))
        ours = Qwen3ForCausalLM.from_pretrained(tmp, dtype=dtype, device="cpu")
        hf = None
        if not args.no_hf:
            import transformers

            hf = transformers.Qwen3ForCausalLM.from_pretrained(tmp, dtype=dtype).eval()

    main_name = f"ProxyScorer batch_tokens={args.batch_tokens} chunk={args.chunk_positions}"
    contenders = {main_name: ours_fn(ours, args.batch_tokens, args.chunk_positions)}
    if hf is not None:
        contenders[f"transformers batch={args.hf_batch} docs, padded+mask"] = hf_fn(hf, args.hf_batch)
    for bt in [int(x) for x in args.sweep_batch_tokens.split(",") if x and int(x) != args.batch_tokens]:
        contenders[f"ProxyScorer batch_tokens={bt} chunk={args.chunk_positions}"] = ours_fn(
            ours, bt, args.chunk_positions
        )
    for ch in [int(x) for x in args.sweep_chunk.split(",") if x and int(x) != args.chunk_positions]:
        contenders[f"ProxyScorer batch_tokens={args.batch_tokens} chunk={ch}"] = ours_fn(
            ours, args.batch_tokens, ch
        )
    for fn in contenders.values():  # warm-up
        fn(docs[:16])
    wall, cpu, ents = interleaved(contenders, docs, rounds)
    width = max(len(k) for k in contenders)
    for name in contenders:
        print(
            f"{name:<{width}}  {wall[name]:7.1f} s wall {n_tok / wall[name]:7.0f} tok/s   "
            f"{n_tok / cpu[name]:7.0f} tok/CPU-s"
        )
    if hf is not None:
        hf_name = list(contenders)[1]
        print(
            f"speedup vs transformers: {wall[hf_name] / wall[main_name]:.2f}x wall, "
            f"{cpu[hf_name] / cpu[main_name]:.2f}x CPU;  "
            f"max |entropy diff| {max_diff(ents[main_name], ents[hf_name]):.2e}"
        )


if __name__ == "__main__":
    main()
