"""A paper model of rollout throughput on a GPU, from kernels counted on the CPU (not a test).

A decode step of B live rows at context c moves ``bytes(B, c) = weights + B x sampler + B x c x KV``
through HBM (weights read once, the sampler's passes over each row's logits, each row's KV cache read
once). On a GPU that runs at the bandwidth, a step takes bytes / HBM bandwidth. In eager mode it also
cannot take less than the host's time to launch its kernels (``ops x host cost per op``), so small
batches are launch-bound; a captured step (CUDA graphs) replays its kernels without the host.

Both terms are measured here, on the CPU, with the code that runs on the GPU: ``measure()`` counts the
aten ops (kernels) of one step of our generate loop and their bytes with a dispatch hook, on the real
model shape (on the ``meta`` device: shapes only, no arithmetic), fits the three byte terms, and times the
host cost per op on a hollow model (the real layer count, tiny matrices). ``predict_rollout`` then
walks a rollout's steps (the live rows at each step follow from the completion lengths and the
compaction policy) and sums the step times. ``benchmarks/GPU.md`` holds the resulting prediction.

    python benchmarks/rollout_model.py            # measure here and print the prediction for H100 / H200
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rpt_core.model import Qwen3Config  # noqa: E402


@dataclass(frozen=True)
class GpuSpec:
    name: str
    bf16_tflops: float | None  # dense, datasheet
    hbm_tbps: float | None  # datasheet


GPUS = {
    "H100 SXM": GpuSpec("H100 SXM", 989.0, 3.35),
    "H100 PCIe": GpuSpec("H100 PCIe", 756.0, 2.0),
    "H100 NVL": GpuSpec("H100 NVL", 835.0, 3.9),
    "H200": GpuSpec("H200", 989.0, 4.8),
    "A100": GpuSpec("A100 80GB", 312.0, 2.0),
}


def gpu_spec(device_name: str) -> GpuSpec:
    """Datasheet figures for a ``torch.cuda.get_device_name()`` string (None when unknown)."""
    name = device_name.upper()
    if "H200" in name:
        return GPUS["H200"]
    if "H100" in name:
        return GPUS["H100 PCIe" if "PCIE" in name else "H100 NVL" if "NVL" in name else "H100 SXM"]
    if "A100" in name:
        return GPUS["A100"]
    return GpuSpec(device_name, None, None)


# Measured on the development machine by ``python benchmarks/rollout_model.py`` (2 shared AMD EPYC cores,
# torch 2.13 CPU) for Qwen3-0.6B in bfloat16; see benchmarks/GPU.md. Re-measure with --measure.
@dataclass(frozen=True)
class StepCosts:
    ops_per_step: int  # aten ops (kernels) of one eager decode step + sampling + loop bookkeeping
    host_us_per_op: float  # host time per eager op (Python + dispatcher; CUDA adds its launch call)
    bytes_fixed: float  # per step: the weights (and anything else independent of B)
    bytes_per_row: float  # per live row: LM-head output, the sampler's passes, activations
    bytes_per_row_slot: float  # per live row and context slot: the KV cache read


MEASURED = StepCosts(
    ops_per_step=1599,
    host_us_per_op=51.0,
    bytes_fixed=1.192e9,
    bytes_per_row=15.61e6,
    bytes_per_row_slot=114_753,
)
# Host time per eager op on a GPU server (an assumption, not a measurement: PyTorch's dispatch plus a CUDA
# launch on an unloaded server core is a few microseconds; the 51 us measured here is a 2-core VM shared
# with a load average of 6-14). Eager throughput in the launch-bound regime scales with its inverse.
GPU_HOST_US_PER_OP = 6.0
GRAPH_US_PER_KERNEL = 1.0  # device-side gap per kernel in a replayed CUDA graph
SAMPLER_OPS = 40  # ops of sampling + loop bookkeeping that stay eager around a replayed graph
ACHIEVED_BANDWIDTH = 0.8  # fraction of datasheet HBM bandwidth a streaming kernel reaches (copy ~4.3 of 4.8)


def step_bytes(costs: StepCosts, rows: int, context: int) -> float:
    return costs.bytes_fixed + rows * (costs.bytes_per_row + context * costs.bytes_per_row_slot)


def batch_schedule(lengths: list[int], check_every: int = 16, min_dead_fraction: float = 1 / 16) -> list[int]:
    """Rows in the batch at each decode step under generate's compaction policy (host checks every
    ``check_every`` steps; rows leave when at least ``min_dead_fraction`` of the batch is finished)."""
    steps = max(lengths)
    batch, out = len(lengths), []
    for t in range(steps - 1):  # the last token's logits are never computed
        if (t + 1) % check_every == 0:
            live = sum(n > t + 1 for n in lengths)
            if live == 0:
                break
            if batch - live >= max(1, min_dead_fraction * batch):
                batch = live
        out.append(batch)
    return out


def predict_rollout(
    config: Qwen3Config, prompt_len: int, lengths: list[int], spec: GpuSpec, costs: StepCosts = MEASURED
) -> dict:
    """Predicted seconds and new tokens/s of one rollout with these completion lengths on ``spec``.

    ``floor``: bandwidth alone at the datasheet rate; ``captured``: at ``ACHIEVED_BANDWIDTH`` plus graph
    replay gaps and the eager sampler; ``eager``: the larger of that and the host's launch time per step.
    Prefill (all prompts, once) is counted at 60% of the bf16 peak for every variant.
    """
    if spec.hbm_tbps is None:
        return {"note": f"no datasheet figures for {spec.name}"}
    bw = spec.hbm_tbps * 1e12
    schedule = batch_schedule(lengths)
    rows_prompts = len(lengths)
    prefill_flops = 2 * config_params(config) * rows_prompts * prompt_len
    prefill_s = prefill_flops / (0.6 * spec.bf16_tflops * 1e12)
    floor = captured = eager = prefill_s
    for t, rows in enumerate(schedule):
        b = step_bytes(costs, rows, prompt_len + t + 1)
        floor += b / bw
        device_s = b / (ACHIEVED_BANDWIDTH * bw)
        graph_gaps = (costs.ops_per_step - SAMPLER_OPS) * GRAPH_US_PER_KERNEL * 1e-6
        captured += device_s + graph_gaps + SAMPLER_OPS * GPU_HOST_US_PER_OP * 1e-6
        eager += max(device_s, costs.ops_per_step * GPU_HOST_US_PER_OP * 1e-6)
    tokens = sum(lengths)
    return {
        "gpu": spec.name,
        "steps": len(schedule) + 1,
        "new_tokens": tokens,
        "floor_s": round(floor, 3),
        "captured_s": round(captured, 3),
        "eager_s": round(eager, 3),
        "floor_tokens_per_s": round(tokens / floor),
        "captured_tokens_per_s": round(tokens / captured),
        "eager_tokens_per_s": round(tokens / eager),
    }


def predict_transformers(config, prompt_len: int, lengths: list[int], spec: GpuSpec, costs=MEASURED) -> dict:
    """transformers ``generate`` keeps every row until the last one stops and grows its cache with a
    concatenation (read + write of the whole cache per step): a paper estimate, launch time ignored."""
    bw = ACHIEVED_BANDWIDTH * spec.hbm_tbps * 1e12
    rows, steps = len(lengths), max(lengths)
    cat = lambda t: 2 * rows * (prompt_len + t + 1) * costs.bytes_per_row_slot  # noqa: E731
    seconds = sum((step_bytes(costs, rows, prompt_len + t + 1) + cat(t)) / bw for t in range(steps))
    return {"seconds": round(seconds, 3), "tokens_per_s": round(sum(lengths) / seconds)}


def update_flops(cfg: Qwen3Config, rows: int, prompt_len: int, lengths: list[int]) -> float:
    """Useful FLOPs of one forward + backward (3x forward) over prompt + completion tokens.

    Forward per token: 2 x (decoder weights) for every token, 2 x (LM head) for completion tokens only
    (the log-prob op runs the head on them alone), plus causal attention: 4 x n_heads x head_dim per
    (query, earlier key) pair, summed over layers.
    """
    H, hd, nh, nkv = cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
    per_layer = H * (nh + 2 * nkv) * hd + nh * hd * H + 3 * H * cfg.intermediate_size
    decoder = 2 * per_layer * cfg.num_hidden_layers
    total = 0.0
    for n_new in lengths:
        seq = prompt_len + n_new
        pairs = seq * (seq + 1) / 2
        total += decoder * seq + 2 * H * cfg.vocab_size * n_new + 4 * nh * hd * pairs * cfg.num_hidden_layers
    return 3 * total


def config_params(config: Qwen3Config) -> int:
    """Decoder weights (the matmuls every token goes through; embedding lookup excluded) + LM head."""
    H, hd, heads = config.hidden_size, config.head_dim, config.num_attention_heads
    attn = H * (heads + 2 * config.num_key_value_heads) * hd + heads * hd * H
    return config.num_hidden_layers * (attn + 3 * H * config.intermediate_size) + H * config.vocab_size


def geometric_lengths(rows: int, stop_p: float, cap: int, seed: int = 0) -> list[int]:
    """Completion lengths of rows that stop with probability ``stop_p`` per token (the stop-id rule with
    random weights, whose sampled tokens are near-uniform), capped at ``cap``."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(rows, generator=g, dtype=torch.float64)
    n = torch.ceil(torch.log1p(-u) / math.log1p(-stop_p)).clamp(1, cap)
    return [int(x) for x in n]


# ------------------------------------------------------------------------------------------ measuring


class _Ops(TorchDispatchMode):
    """Counts non-view aten ops and the bytes they read and write (sparse reads counted as touched)."""

    # Ops that touch only what they gather or write, not their whole source / destination.
    SPARSE = {
        "aten.embedding.default",
        "aten.index.Tensor",
        "aten.gather.default",
        "aten.index_copy_.default",
    }

    def __init__(self):
        super().__init__()
        self.ops, self.bytes = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            self.ops += 1
            outs = [t for t in _tensors(out)]
            if str(func) in self.SPARSE:  # touches what it writes (or gathers), not the whole source
                self.bytes += 2 * sum(t.nbytes for t in outs if not str(func).endswith("_.default"))
                if str(func).endswith("_.default"):
                    self.bytes += 2 * _tensors(args)[-1].nbytes
            else:
                self.bytes += sum(t.nbytes for t in _tensors(args) + _tensors(kwargs or {})) + sum(
                    t.nbytes for t in outs
                )
        return out


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _step_bytes(model, rows: int, context: int) -> tuple[int, int]:
    """(ops, bytes) of one decode step + sampling draw of ``model`` (CPU, values irrelevant)."""
    from rpt_core.model.decode import decode_step
    from rpt_core.model.generation import SamplingParams, sample_full

    cache = model.new_kv_cache(rows, context + 1)
    cache.length = context
    work = torch.empty(rows, model.config.vocab_size)
    live, tokens = torch.ones(rows, dtype=torch.bool), torch.zeros(rows, dtype=torch.long)
    with _Ops() as ops, torch.no_grad():
        logits = decode_step(model, tokens, *cache.decode_inputs(live, 0))
        sample_full(logits, SamplingParams(temperature=0.8), None, work)
    return ops.ops, ops.bytes


def measure(config: Qwen3Config) -> StepCosts:
    """Fit the byte terms on the real shape (zero weights, CPU) and time the host cost per op on a hollow
    model (the real layer count, tiny matrices): the difference of a 65- and a 1-token generation."""
    from rpt_core.model import Qwen3ForCausalLM
    from rpt_core.model.generation import SamplingParams, generate

    with torch.device("meta"):
        model = Qwen3ForCausalLM(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16).eval()
    for p in model.parameters():
        p.detach().zero_()
    (_, b1), (_, b2), (_, b3) = (_step_bytes(model, r, c) for r, c in ((2, 32), (4, 32), (4, 96)))
    del model
    per_row_slot = (b3 - b2) / (4 * 64)
    per_row = (b2 - b1) / 2 - 33 * per_row_slot  # the step reads context + 1 slots (its own included)
    fixed = b1 - 2 * (per_row + 33 * per_row_slot)
    hollow_cfg = Qwen3Config.preset(
        "tiny",
        vocab_size=1024,
        hidden_size=32,
        intermediate_size=32,
        head_dim=8,
        num_hidden_layers=config.num_hidden_layers,
    )
    hollow = Qwen3ForCausalLM(hollow_cfg).eval()
    long, short = (SamplingParams(max_new_tokens=n, temperature=0.8, stop_token_ids=(1023,)) for n in (65, 1))
    generate(hollow, [[1, 2, 3]], long)  # warm-up
    with _Ops() as ops_long:
        generate(hollow, [[1, 2, 3]], long)
    with _Ops() as ops_short:
        generate(hollow, [[1, 2, 3]], short)
    ops_per_step = round((ops_long.ops - ops_short.ops) / 64)

    def best(params) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            generate(hollow, [[1, 2, 3]], params)
            times.append(time.perf_counter() - t0)
        return min(times)

    host_us = (best(long) - best(short)) / 64 / ops_per_step * 1e6
    return StepCosts(ops_per_step, round(host_us, 1), fixed, per_row, per_row_slot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=1024)
    parser.add_argument("--stop-p", type=float, default=0.01)
    args = parser.parse_args()
    config = Qwen3Config.preset("qwen3-0.6b", eos_token_id=None)
    costs = measure(config)
    print(
        f"measured here ({torch.get_num_threads()} threads): {costs.ops_per_step} ops per decode step, "
        f"{costs.host_us_per_op} us host time per op; bytes per step = {costs.bytes_fixed / 1e9:.3f} GB "
        f"+ B x {costs.bytes_per_row / 1e6:.2f} MB + B x context x {costs.bytes_per_row_slot / 1024:.0f} KiB"
    )
    print(f"  {costs!r}")
    lengths = geometric_lengths(args.rows, args.stop_p, args.new_tokens)
    print(
        f"workload: {args.rows} rows, {args.prompt_len}-token prompts, stop p = {args.stop_p}/token, cap "
        f"{args.new_tokens}: {sum(lengths):,} new tokens, mean {sum(lengths) / len(lengths):.1f}, "
        f"max {max(lengths)}"
    )
    print(f"{'GPU':<10} {'floor tok/s':>12} {'captured':>10} {'eager':>10} {'transformers':>13} {'steps':>6}")
    for key in ("H100 SXM", "H200"):
        p = predict_rollout(config, args.prompt_len, lengths, GPUS[key], costs)
        hf = predict_transformers(config, args.prompt_len, lengths, GPUS[key], costs)
        print(
            f"{key:<10} {p['floor_tokens_per_s']:>12,} {p['captured_tokens_per_s']:>10,} "
            f"{p['eager_tokens_per_s']:>10,} {hf['tokens_per_s']:>13,} {p['steps']:>6}"
        )
    h100 = GPUS["H100 SXM"]
    launch_ms = costs.ops_per_step * GPU_HOST_US_PER_OP / 1e3
    print(
        f"one decode step on an H100 SXM ({h100.hbm_tbps} TB/s): bandwidth floor (eager launch floor "
        f"{costs.ops_per_step} ops x {GPU_HOST_US_PER_OP} us = {launch_ms:.1f} ms)"
    )
    for rows in (1, 32, 128, 512):
        for context in (300, 1280):
            gb = step_bytes(costs, rows, context) / 1e9
            print(f"  B = {rows:>3}, context {context:>4}: {gb:6.2f} GB -> {gb / h100.hbm_tbps:5.2f} ms")
    flops = update_flops(config, args.rows, args.prompt_len, lengths)
    tokens = args.rows * args.prompt_len + sum(lengths)
    for mfu in (0.25, 0.45):
        sec = flops / (mfu * h100.bf16_tflops * 1e12)
        print(
            f"GRPO update over these rollouts ({flops / 1e12:.0f} TFLOP, {tokens:,} tokens) at {mfu:.0%} "
            f"MFU on an H100: {sec:.2f} s, {tokens / sec:,.0f} tok/s"
        )


if __name__ == "__main__":
    main()
