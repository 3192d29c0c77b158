"""Benchmark: our batched ``generate`` and prefill against transformers, same random weights, on CPU.

Not a test (run by ``make bench``). Same random weights on both sides (a Qwen3 of 4 layers, hidden 256, the
real 151,936-row vocabulary), batch 16 prompts of 128 tokens, temperature 0.8, float32 and bfloat16:

* fixed length: exactly 128 new tokens per row, the best of ``--repeats`` runs per side (interleaved).
  Targets: >= 3x transformers in float32, >= 5x in bfloat16.
* variable length, the shape of thinking rollouts: a row stops when it samples one of a fixed random 1% of
  the vocabulary (passed as stop ids to both sides; transformers gets them as its eos_token_id list), at
  most 384 new tokens; only tokens up to each row's stop count. Targets: >= 4x float32, >= 6x bfloat16.
  Row lengths are random, so each side runs ``--repeats`` times (tokens and seconds summed).
* prefill (last-position logits): >= 1x.

Each generation is timed once per repeat after a short warm-up (prefill and single draws: best of a few),
so numbers move with machine load (up to 1.5x on the shared 2-core development machine); the ratios,
measured in the same run, are what matter.

    python benchmarks/bench_generate.py            # float32 and bfloat16, both cases
    python benchmarks/bench_generate.py --quick    # smoke run with small sizes
    python benchmarks/bench_generate.py --dtype bfloat16 --case variable
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass

import torch

from rpt_core.model import Qwen3Config, Qwen3ForCausalLM
from rpt_core.model.generation import SamplingParams, generate, sample_full

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
VOCAB = 151936


@dataclass
class Sizes:
    batch: int = 16
    prompt_len: int = 128
    new_tokens: int = 128  # fixed-length case
    variable_max: int = 384  # variable-length case: the cap
    stop_fraction: float = 0.01  # variable-length case: share of the vocabulary that stops a row
    repeats: int = 4  # runs per side (fixed: the best counts; variable: tokens and seconds summed)


TARGETS = {
    ("fixed", "float32"): 3.0,
    ("fixed", "bfloat16"): 5.0,
    ("variable", "float32"): 4.0,
    ("variable", "bfloat16"): 6.0,
}


def bench_config() -> Qwen3Config:
    return Qwen3Config.preset(
        "tiny",
        vocab_size=151936,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        tie_word_embeddings=True,
        eos_token_id=None,
    )


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best_of(fn, repeats: int) -> float:
    fn()
    return min(timed(fn) for _ in range(repeats))


def bench_sampling(dtype: torch.dtype, rows: int, repeats: int = 5) -> tuple[float, float]:
    """Seconds for one draw from (rows, 151936) logits at temperature 0.8 (already divided by it, as
    ``generate`` hands them over): our softmax + two-level race vs softmax + torch.multinomial."""
    gen = torch.Generator().manual_seed(0)
    logits = (3 / 0.8 * torch.randn(rows, 151936, generator=gen)).to(dtype)
    params = SamplingParams(temperature=0.8)
    work = torch.empty(rows, 151936)
    ours = best_of(lambda: sample_full(logits, params, gen, work), repeats)
    theirs = best_of(lambda: torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=gen), repeats)
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
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=True,
        temperature=0.8,
        top_k=0,
        top_p=1.0,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        eos_token_id=None,
        pad_token_id=0,
    )
    if out.shape[1] - ids.shape[1] != new_tokens:  # a short run would flatter transformers
        raise SystemExit(f"transformers stopped after {out.shape[1] - ids.shape[1]} of {new_tokens} tokens")
    return out


def random_stop_ids(fraction: float, vocab: int = VOCAB) -> list[int]:
    """A fixed random ``fraction`` of the vocabulary (seeded: the same set on both sides, every run; also
    used by bench_grpo.py)."""
    n = round(fraction * vocab)
    return torch.randperm(vocab, generator=torch.Generator().manual_seed(1234))[:n].sort().values.tolist()


def hf_variable(hf, ids: torch.Tensor, sizes: Sizes, stops: list[int]) -> int:
    """transformers with the stop ids as its eos list; returns new tokens up to each row's first stop."""
    out = hf.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=True,
        temperature=0.8,
        top_k=0,
        top_p=1.0,
        max_new_tokens=sizes.variable_max,
        eos_token_id=stops,
        pad_token_id=0,
    )
    new = out[:, ids.shape[1] :]  # (B, T): pad after a row's stop
    is_stop = torch.isin(new, torch.tensor(stops))
    return int(torch.where(is_stop.any(-1), is_stop.int().argmax(-1) + 1, new.shape[1]).sum())


def variable_case(ours, hf, ids: torch.Tensor, sizes: Sizes, gen: torch.Generator) -> tuple[float, float]:
    """New tokens/s up to each row's stop: (ours, transformers), each summed over ``sizes.repeats`` runs."""
    stops = random_stop_ids(sizes.stop_fraction)
    params = SamplingParams(max_new_tokens=sizes.variable_max, temperature=0.8, stop_token_ids=tuple(stops))
    prompts = ids.tolist()
    ours_tokens = ours_s = hf_tokens = hf_s = 0.0
    for _ in range(sizes.repeats):
        t0 = time.perf_counter()
        out = generate(ours, prompts, params, generator=gen)
        ours_s += time.perf_counter() - t0
        ours_tokens += int(out.lengths().sum())
        t0 = time.perf_counter()
        hf_tokens += hf_variable(hf, ids, sizes, stops)
        hf_s += time.perf_counter() - t0
    return ours_tokens / ours_s, hf_tokens / hf_s


@torch.no_grad()
def ours_prefill(model: Qwen3ForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    cache = model.new_kv_cache(ids.shape[0], ids.shape[1])
    hidden = model.hidden_states(ids, attention_mask=torch.ones_like(ids), kv_cache=cache)
    return model.lm_head(hidden[:, -1])  # what generate's prefill computes


def run(dtype_name: str, sizes: Sizes, cases: list[str]) -> dict[str, float]:
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

    r: dict[str, float] = {}
    if "fixed" in cases:
        n_new = sizes.batch * sizes.new_tokens
        t_ours, t_hf = [], []
        for _ in range(sizes.repeats):  # interleaved, so a burst of machine load hits both sides alike
            t_ours.append(timed(lambda: generate(ours, prompts, params, generator=gen)))
            t_hf.append(timed(lambda: hf_generate(hf, ids, sizes.new_tokens)))
        r.update(gen_ours=n_new / min(t_ours), gen_hf=n_new / min(t_hf))
    if "variable" in cases:
        r["var_ours"], r["var_hf"] = variable_case(ours, hf, ids, sizes, gen)
    if "prefill" in cases:
        n_prompt = sizes.batch * sizes.prompt_len
        with torch.no_grad():
            # Prefills are short, so take the best of 3 to damp machine noise.
            p_ours = best_of(lambda: ours_prefill(ours, ids), 3)
            p_hf = best_of(lambda: hf(input_ids=ids, use_cache=True, logits_to_keep=1), 3)
            p_hf_full = best_of(lambda: hf(input_ids=ids, use_cache=True), 3)
        s_ours, s_mult = bench_sampling(dtype, sizes.batch)
        r.update(
            prefill_ours=n_prompt / p_ours,
            prefill_hf=n_prompt / p_hf,
            prefill_hf_full=n_prompt / p_hf_full,
            sample_ours_ms=1e3 * s_ours,
            sample_multinomial_ms=1e3 * s_mult,
        )
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "both"], default="both")
    parser.add_argument("--case", choices=["fixed", "variable", "prefill", "all"], default="all")
    parser.add_argument(
        "--repeats", type=int, default=Sizes.repeats, help="runs per side (fixed: best of; variable: summed)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = Sizes(repeats=args.repeats)
    if args.quick:
        sizes = Sizes(batch=4, prompt_len=16, new_tokens=8, variable_max=24, stop_fraction=0.05, repeats=1)
    dtypes = ["float32", "bfloat16"] if args.dtype == "both" else [args.dtype]
    cases = ["fixed", "variable", "prefill"] if args.case == "all" else [args.case]
    print(
        f"Qwen3 4 layers, hidden 256, vocab 151,936; batch {sizes.batch}, prompt {sizes.prompt_len}, "
        f"temperature 0.8; fixed: {sizes.new_tokens} new tokens; variable: stop on {sizes.stop_fraction:.0%} "
        f"of the vocabulary, <= {sizes.variable_max} new tokens, {sizes.repeats} run(s) per side; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"{'dtype':<9} {'measure':<34} {'ours':>10} {'transformers':>13} {'ratio':>7}  target")
    for name in dtypes:
        r = run(name, sizes, cases)
        rows = [
            ("generate, fixed (new tok/s)", "gen_ours", "gen_hf", TARGETS.get(("fixed", name))),
            ("generate, variable (new tok/s)", "var_ours", "var_hf", TARGETS.get(("variable", name))),
            ("prefill, last logits (tok/s)", "prefill_ours", "prefill_hf", 1.0),
            ("prefill vs HF full logits", "prefill_ours", "prefill_hf_full", None),
            ("one draw, ms (vs multinomial)", "sample_ours_ms", "sample_multinomial_ms", None),
        ]
        for label, k_ours, k_hf, target in rows:
            if k_ours not in r:
                continue
            ours, hf = r[k_ours], r[k_hf]
            ratio = hf / ours if label.startswith("one draw") else ours / hf  # speed-up either way
            verdict = "" if target is None else f">= {target:g}x {'meets' if ratio >= target else 'MISSES'}"
            print(f"{name:<9} {label:<34} {ours:>10.1f} {hf:>13.1f} {ratio:>6.2f}x  {verdict}")


if __name__ == "__main__":
    main()
