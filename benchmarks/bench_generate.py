"""Benchmark: our batched ``generate`` and prefill against transformers, same random weights, on CPU.

Not a test (run by ``make bench``). One timed generation run per side after a short warm-up (prefill
and single draws: best of a few), so numbers move with machine load; the ratios are what matter.
Targets: generation >= 3x transformers, prefill >= 1x.

    python benchmarks/bench_generate.py            # float32 and bfloat16, batch 16, 128 + 128 tokens
    python benchmarks/bench_generate.py --quick    # smoke run with small sizes
    python benchmarks/bench_generate.py --dtype bfloat16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass

import torch

from rpt_train.generate import SamplingParams, generate, sample_full
from rpt_train.model import Qwen3Config, Qwen3ForCausalLM

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class Sizes:
    batch: int = 16
    prompt_len: int = 128
    new_tokens: int = 128


def bench_config() -> Qwen3Config:
    return Qwen3Config.preset(
        "tiny", vocab_size=151936, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, tie_word_embeddings=True,
        eos_token_id=None,
    )  # fmt: skip


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best_of(fn, repeats: int) -> float:
    fn()
    return min(timed(fn) for _ in range(repeats))


def bench_sampling(dtype: torch.dtype, rows: int, repeats: int = 5) -> tuple[float, float]:
    """Seconds for one draw from (rows, 151936) logits: our two-level race vs softmax + torch.multinomial."""
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(rows, 151936, generator=gen)).to(dtype)
    params = SamplingParams(temperature=0.8)
    work = torch.empty(rows, 151936)
    ours = best_of(lambda: sample_full(logits, params, gen, work), repeats)
    theirs = best_of(
        lambda: torch.multinomial(torch.softmax(logits.float() / 0.8, -1), 1, generator=gen), repeats
    )
    return ours, theirs


def load_pair(tmp: str, dtype: torch.dtype):
    """Our model and transformers' model with identical weights (ours saved, transformers loads it)."""
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.manual_seed(0)
    Qwen3ForCausalLM(bench_config()).to(dtype).save_pretrained(tmp)
    ours = Qwen3ForCausalLM.from_pretrained(tmp, device="cpu").eval()
    hf = AutoModelForCausalLM.from_pretrained(tmp, dtype=dtype).eval()
    return ours, hf


def hf_generate(hf, ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    out = hf.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=0.8, top_k=0,
        top_p=1.0, max_new_tokens=new_tokens, min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0,
    )  # fmt: skip
    if out.shape[1] - ids.shape[1] != new_tokens:  # a short run would flatter transformers
        raise SystemExit(f"transformers stopped after {out.shape[1] - ids.shape[1]} of {new_tokens} tokens")
    return out


@torch.no_grad()
def ours_prefill(model: Qwen3ForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    cache = model.new_kv_cache(ids.shape[0], ids.shape[1])
    hidden = model.hidden_states(ids, attention_mask=torch.ones_like(ids), kv_cache=cache)
    return model.lm_head(hidden[:, -1])  # what generate's prefill computes


def run(dtype_name: str, sizes: Sizes) -> dict[str, float]:
    dtype = DTYPES[dtype_name]
    with tempfile.TemporaryDirectory() as tmp:
        ours, hf = load_pair(tmp, dtype)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 151_000, (sizes.batch, sizes.prompt_len), generator=gen)
    prompts = ids.tolist()
    params = SamplingParams(max_new_tokens=sizes.new_tokens, temperature=0.8)
    warm = SamplingParams(max_new_tokens=2, temperature=0.8)
    generate(ours, prompts, warm, generator=gen)
    torch.manual_seed(0)
    hf_generate(hf, ids, 2)

    n_new, n_prompt = sizes.batch * sizes.new_tokens, sizes.batch * sizes.prompt_len
    t_ours = timed(lambda: generate(ours, prompts, params, generator=gen))
    t_hf = timed(lambda: hf_generate(hf, ids, sizes.new_tokens))
    with torch.no_grad():
        # Prefills are short, so take the best of 3 to damp machine noise.
        p_ours = best_of(lambda: ours_prefill(ours, ids), 3)
        p_hf = best_of(lambda: hf(input_ids=ids, use_cache=True, logits_to_keep=1), 3)
        p_hf_full = best_of(lambda: hf(input_ids=ids, use_cache=True), 3)
    s_ours, s_mult = bench_sampling(dtype, sizes.batch)
    return {
        "sample_ours_ms": 1e3 * s_ours, "sample_multinomial_ms": 1e3 * s_mult,
        "gen_ours": n_new / t_ours, "gen_hf": n_new / t_hf, "prefill_ours": n_prompt / p_ours,
        "prefill_hf": n_prompt / p_hf, "prefill_hf_full": n_prompt / p_hf_full,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "both"], default="both")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = Sizes(batch=4, prompt_len=16, new_tokens=8) if args.quick else Sizes()
    dtypes = ["float32", "bfloat16"] if args.dtype == "both" else [args.dtype]
    print(
        f"Qwen3 4 layers, hidden 256, vocab 151,936; batch {sizes.batch}, prompt {sizes.prompt_len}, "
        f"{sizes.new_tokens} new tokens, temperature 0.8; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{'dtype':<9} {'measure':<30} {'ours':>10} {'transformers':>13} {'ratio':>7}")
    for name in dtypes:
        r = run(name, sizes)
        rows = [
            ("generate (new tok/s)", r["gen_ours"], r["gen_hf"]),
            ("prefill, last logits (tok/s)", r["prefill_ours"], r["prefill_hf"]),
            ("prefill vs HF full logits", r["prefill_ours"], r["prefill_hf_full"]),
            ("one draw, ms (vs multinomial)", r["sample_ours_ms"], r["sample_multinomial_ms"]),
        ]
        for label, ours, hf in rows:
            ratio = hf / ours if label.startswith("one draw") else ours / hf  # speed-up either way
            print(f"{name:<9} {label:<30} {ours:>10.1f} {hf:>13.1f} {ratio:>6.2f}x")
    print("targets: generate >= 3x, prefill >= 1x")


if __name__ == "__main__":
    main()
