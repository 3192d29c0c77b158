"""Benchmark: one GRPO step of ``rpt_train`` against TRL's ``GRPOTrainer``, and our rollout against
transformers ``generate``, on the same random weights (not a test; run by ``make bench``).

Settings (both sides): one context, G = 8 completions at temperature 0.8, a Qwen3 of 4 layers (hidden
256, 4 heads, 2 KV heads, head_dim 64, MLP 768, tied embeddings, the full 151,936-row vocabulary), the
real Qwen3 tokenizer (``tests/fixtures/qwen3``), float32, one optimizer step per rollout, no KL, no
gradient checkpointing. Steady state: the first step of each side is a warm-up and the median of the
others is reported. Two cases:

* fixed: exactly 64 new tokens per completion. Target: >= 6x fewer seconds per step than TRL.
* variable: a completion stops when it samples one of a fixed random 1% of the vocabulary (the set of
  ``bench_generate.py``) or an end-of-text token, at most 256 new tokens; TRL gets the same ids as the
  model's eos list, which its ``GRPOTrainer`` stops and masks on. Reported (no target stated).

    python benchmarks/bench_grpo.py                 # both cases: 6 of our steps, 4 TRL steps each
    python benchmarks/bench_grpo.py --quick         # smoke run: fewer steps, TRL skipped
    python benchmarks/bench_grpo.py --case variable --skip-trl
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never reach for the network

import torch

from rpt_core import reward as reward_module
from rpt_core.data import shards
from rpt_core.model import Qwen3Config, Qwen3ForCausalLM
from rpt_core.model.generation import SamplingParams, generate
from rpt_core.text.prompts import load_template
from rpt_core.text.tokenizer import Tokenizer
from rpt_train.rl import rollout as rollout_module
from rpt_train.rl.config import TrainConfig
from rpt_train.rl.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
TOKENIZER_DIR = REPO / "tests" / "fixtures" / "qwen3"
G, NEW_TOKENS, VARIABLE_MAX, TEMPERATURE = 8, 64, 256, 0.8
TARGET_FIXED = 6.0
CONTEXT = "In 1905 Albert Einstein published four papers that changed physics. The first explained the"
LABEL = " photo"


def bench_config() -> Qwen3Config:
    return Qwen3Config(
        vocab_size=151936,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        tie_word_embeddings=True,
        max_position_embeddings=40960,
        eos_token_id=151645,
        torch_dtype="float32",
    )


def setup(root: Path) -> tuple[Path, Path, Tokenizer]:
    """A model directory (weights + tokenizer files) and a one-row shard directory."""
    tok = Tokenizer.load(TOKENIZER_DIR)
    model_dir = root / "model"
    torch.manual_seed(0)
    Qwen3ForCausalLM(bench_config()).save_pretrained(model_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER_DIR / name, model_dir / name)
    row = dict(
        doc_id="bench",
        position=0,
        context=CONTEXT,
        label=LABEL.encode(),
        boundaries=[len(LABEL)],
        entropy=1.0,
        n_context_tokens=0,
        token_id=0,
        label_token_ids=[0],
        domain=None,
        difficulty=None,
        source="bench",
    )
    shard_dir = root / "shards"
    shards.write_shard(shard_dir / "train" / shards.shard_name("train", 0, 0), shards.rows_to_table([row]))
    manifest = {"tokenizer_base_vocab_fingerprint": tok.base_vocab_fingerprint}
    (shard_dir / shards.MANIFEST_NAME).write_text(json.dumps(manifest))
    return model_dir, shard_dir, tok


_COIN = random.Random(0)


def _coin_rewards(completions, *args, **kwargs) -> list[float]:
    """Random 0/1 rewards on both sides: a random-weight model never extracts an answer, and all-equal
    rewards would leave the advantages 0; the timed computation is the same either way."""
    return [float(_COIN.random() < 0.5) for _ in completions]


def prompt_text() -> str:
    return load_template("qwen3-think").render(CONTEXT)


def bench_ours(model_dir: Path, shard_dir: Path, out: Path, steps: int, stops: list[int] | None) -> dict:
    """Median seconds per step and its split, over steps 2..N of ``rpt-train run``'s loop.

    ``stops`` None: exactly NEW_TOKENS per completion; else stop on those ids, at most VARIABLE_MAX.
    """
    new_tokens = NEW_TOKENS if stops is None else VARIABLE_MAX
    cfg = TrainConfig.from_flat(
        shards=str(shard_dir),
        model=str(model_dir),
        out=str(out),
        template="qwen3-think",
        max_steps=steps,
        batch_size=1,
        num_generations=G,
        max_new_tokens=new_tokens,
        temperature=TEMPERATURE,
        micro_batch_size=G,
        lr=1e-6,
        warmup_steps=0,
        save_every=0,
        sample_every=0,
        quiet=True,
        dtype="float32",
    )
    trainer = Trainer(cfg)
    trainer.spec = _with_stops(trainer.spec, () if stops is None else tuple(stops))
    reward_module.compute_rewards = _coin_rewards  # benchmark only: see _coin_rewards
    trainer.train()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][1:]
    med = lambda key: statistics.median(r[key] for r in rows)  # noqa: E731
    split = {k: med(f"time_{k}") for k in ("generate", "score", "update")}
    return {
        "step": statistics.median(sum(r[f"time_{k}"] for k in split) for r in rows),
        **split,
        "completion_len": med("completion_len_mean"),
    }


def _with_stops(spec, stops: tuple[int, ...]):
    from dataclasses import replace

    return replace(spec, sampling=replace(spec.sampling, stop_token_ids=stops))


def variable_stops(tok: Tokenizer) -> list[int]:
    """The random 1% of bench_generate.py plus the end-of-text ids (what our rollouts always stop on)."""
    from bench_generate import random_stop_ids

    return sorted(set(random_stop_ids(0.01)) | set(rollout_module.stop_token_ids(tok)))


def bench_rollout(model_dir: Path, tok: Tokenizer, repeats: int) -> tuple[float, float]:
    """Generated tokens per second: ours vs transformers ``generate`` (same weights, same prompt)."""
    from transformers import AutoModelForCausalLM

    ids = tok.encode(prompt_text())
    ours = Qwen3ForCausalLM.from_pretrained(model_dir, dtype="float32", device="cpu")
    params = SamplingParams(max_new_tokens=NEW_TOKENS, temperature=TEMPERATURE)
    gen = torch.Generator().manual_seed(0)
    run_ours = lambda: generate(ours, [ids], params, num_samples=G, generator=gen)  # noqa: E731
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    x = torch.tensor([ids])
    run_hf = lambda: hf.generate(  # noqa: E731
        x,
        attention_mask=torch.ones_like(x),
        do_sample=True,
        temperature=TEMPERATURE,
        top_k=0,
        top_p=1.0,
        max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS,
        num_return_sequences=G,
        pad_token_id=0,
    )
    with torch.no_grad():
        t_ours = _best(run_ours, repeats)
        t_hf = _best(run_hf, repeats)
    return G * NEW_TOKENS / t_ours, G * NEW_TOKENS / t_hf


def _best(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_trl(model_dir: Path, out: Path, steps: int, stops: list[int] | None) -> tuple[float, float]:
    """Median seconds per ``GRPOTrainer`` step over steps 2..N (generation, scoring and update), and the
    mean completion length TRL logged."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.lengths, self._t0 = [], [], 0.0

        def on_step_begin(self, args, state, control, **kw):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self._t0)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                self.lengths.append(logs["completions/mean_length"])

    args = GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=G,
        num_generations=G,
        max_completion_length=NEW_TOKENS if stops is None else VARIABLE_MAX,
        temperature=TEMPERATURE,
        top_k=0,
        top_p=1.0,
        learning_rate=1e-6,
        beta=0.0,
        num_iterations=1,
        max_steps=steps,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        loss_type="dapo",
        seed=0,
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.generation_config.eos_token_id = stops  # None: exactly NEW_TOKENS, as on our side
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = Dataset.from_list([{"prompt": prompt_text()}] * (G * steps))
    timer = StepTimer()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=_coin_rewards,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[timer],
    )
    trainer.train()
    return statistics.median(timer.times[1:]), statistics.median(timer.lengths[1:] or [float("nan")])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=6, help="our GRPO steps (the first is a warm-up)")
    parser.add_argument("--trl-steps", type=int, default=4, help="TRL GRPO steps (the first is a warm-up)")
    parser.add_argument("--case", choices=["fixed", "variable", "both"], default="both")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="3 steps, 16 / 32 new tokens, no TRL: checks the script runs"
    )
    args = parser.parse_args()
    if args.quick:
        global NEW_TOKENS, VARIABLE_MAX  # noqa: PLW0603 (a smoke run shrinks the module's sizes)
        args.steps, args.skip_trl, NEW_TOKENS, VARIABLE_MAX = 3, True, 16, 32
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu, float32")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir, shard_dir, tok = setup(root)
        n_prompt = len(tok.encode(prompt_text()))
        print(f"prompt: {n_prompt} tokens; G={G}, T={TEMPERATURE}")
        if args.case in ("fixed", "both"):
            tps_ours, tps_hf = bench_rollout(model_dir, tok, 1 if args.quick else 3)
            print(
                f"rollout, {NEW_TOKENS} new tokens: rpt_train {tps_ours:,.0f} tok/s, transformers generate "
                f"{tps_hf:,.0f} tok/s ({tps_ours / tps_hf:.1f}x)"
            )
        cases = [("fixed", None), ("variable", variable_stops(tok))]
        for case, stops in cases:
            if args.case not in (case, "both"):
                continue
            what = f"exactly {NEW_TOKENS}" if stops is None else f"{len(stops)} stop ids, <= {VARIABLE_MAX}"
            ours = bench_ours(model_dir, shard_dir, root / f"run-{case}", args.steps, stops)
            print(
                f"[{case}: {what} new tokens] rpt_train GRPO step: {ours['step']:.3f} s  (generate "
                f"{ours['generate']:.3f} s, score {ours['score']:.3f} s, update {ours['update']:.3f} s; "
                f"mean completion {ours['completion_len']:.0f} tokens)"
            )
            if args.skip_trl:
                continue
            trl_step, trl_len = bench_trl(model_dir, root / f"trl-{case}", args.trl_steps, stops)
            speedup = trl_step / ours["step"]
            verdict = (
                ""
                if stops is not None
                else (
                    f" ({'meets' if speedup >= TARGET_FIXED else 'MISSES'} the >= {TARGET_FIXED:g}x target)"
                )
            )
            print(
                f"[{case}] TRL GRPOTrainer step: {trl_step:.3f} s (mean completion {trl_len:.0f} tokens) "
                f"-> rpt_train is {speedup:.1f}x faster{verdict}"
            )


if __name__ == "__main__":
    main()
