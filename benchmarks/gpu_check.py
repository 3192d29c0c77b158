"""The throughput half of ``benchmarks/gpu_check.sh``, and its summary table (not a test).

On a Qwen3-0.6B-shaped model with random weights in bfloat16: rollouts of 64 prompts x G = 8 (256-token
prompts, temperature 0.8, each row stops when it samples one of a fixed random 1% of the vocabulary, at
most 1,024 new tokens), our ``generate`` (eager, then compiled with CUDA graphs) against transformers
``generate`` with the same stop ids, counting new tokens up to each row's stop; one GRPO update (float32
master weights, bfloat16 autocast, fused AdamW) over those rollouts: tokens/s and model FLOPs utilisation
against the GPU's dense bf16 peak; seconds per trainer step of each objective (RPT and RLP, same weights,
the ``think`` template, 8 contexts x G = 8, <= 128 thought tokens); peak GPU memory of each part; and the
copy bandwidth and bf16 matmul rate of the card as measured ceilings. Every part writes its result into
OUT/throughput.json as soon as it ends, so a part that times out leaves the others.

    python benchmarks/gpu_check.py --out DIR              # the measurements (CUDA)
    python benchmarks/gpu_check.py --summary DIR          # the table from DIR's files (any machine)
    python benchmarks/gpu_check.py --out DIR --quick      # tiny sizes: checks the script runs (CPU too)

Needs only torch, transformers, numpy-free stdlib; never imports polars or datasets.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from anywhere, without install

from benchmarks.rollout_model import gpu_spec, predict_rollout, update_flops  # noqa: E402
from rpt_core.model import Qwen3Config, Qwen3ForCausalLM  # noqa: E402
from rpt_core.model.decode import DecodeOptions  # noqa: E402
from rpt_core.model.generation import SamplingParams, generate  # noqa: E402

RESULTS = "throughput.json"


@dataclass
class Shape:
    prompts: int = 64
    group: int = 8
    prompt_len: int = 256
    new_tokens: int = 1024
    stop_fraction: float = 0.01
    micro_batch: int = 16


QUICK = Shape(prompts=2, group=4, prompt_len=16, new_tokens=24, stop_fraction=0.05, micro_batch=4)


class Results:
    """throughput.json, rewritten after every part."""

    def __init__(self, out: Path):
        self.path, self.data = out / RESULTS, {}
        if self.path.exists():
            self.data = json.loads(self.path.read_text())

    def put(self, key: str, value) -> None:
        self.data[key] = value
        print(f"[gpu_check] {key}: {json.dumps(value)}", flush=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None


# ------------------------------------------------------------------------------------------ ceilings


def measure_ceilings(device) -> dict:
    """Copy bandwidth (bytes read + written) and dense bf16 matmul rate on random data, median of 10."""
    n = 2**30  # elements: 2 GiB of bf16 per buffer
    buffers = torch.empty(2, n, dtype=torch.bfloat16, device=device).normal_()
    copy_s = _median_time(lambda: buffers[1].copy_(buffers[0]), device)
    buffers = None
    m = torch.randn(8192, 8192, dtype=torch.bfloat16, device=device)
    mm_s = _median_time(lambda: m @ m, device)
    return {
        "copy_TBps": round(4 * n / copy_s / 1e12, 2),
        "bf16_matmul_TFLOPs": round(2 * 8192**3 / mm_s / 1e12),
    }


def _median_time(fn, device, repeats: int = 10) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


# ------------------------------------------------------------------------------------------ rollouts


def build_model(device, quick: bool) -> Qwen3ForCausalLM:
    torch.manual_seed(0)
    cfg = (
        Qwen3Config.preset("tiny", vocab_size=151936, eos_token_id=None)
        if quick
        else Qwen3Config.preset("qwen3-0.6b", eos_token_id=None, torch_dtype="bfloat16")
    )
    with torch.device(device):  # random init on the device: seconds, not a minute of CPU normal_()
        model = Qwen3ForCausalLM(cfg)
    return model.to(torch.bfloat16).eval()


def workload(shape: Shape, vocab: int, device):
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, vocab, (shape.prompts, shape.prompt_len), generator=g).tolist()
    n_stop = max(1, round(shape.stop_fraction * vocab))
    stops = torch.randperm(vocab, generator=g)[:n_stop].sort().values.tolist()
    params = SamplingParams(max_new_tokens=shape.new_tokens, temperature=0.8, stop_token_ids=tuple(stops))
    return prompts, stops, params


def run_ours(model, prompts, params, shape: Shape, options: DecodeOptions, device) -> dict:
    warm = SamplingParams(max_new_tokens=32, temperature=0.8, stop_token_ids=params.stop_token_ids)
    generate(model, prompts[:4], warm, shape.group, torch.Generator(device).manual_seed(1), decode=options)
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    gen = generate(model, prompts, params, shape.group, torch.Generator(device).manual_seed(0), 0, options)
    sync(device)
    seconds = time.perf_counter() - t0
    lengths = gen.lengths().tolist()
    total = sum(lengths)
    return {
        "seconds": round(seconds, 3),
        "new_tokens": total,
        "tokens_per_s": round(total / seconds),
        "mean_len": round(total / len(lengths), 1),
        "max_len": max(lengths),
        "rows": len(lengths),
        "peak_GiB": peak_gib(device),
        "lengths": lengths,
    }, gen


def run_transformers(model, prompts, stops, shape: Shape, device) -> dict:
    import transformers

    transformers.logging.set_verbosity_error()
    hf_config = transformers.Qwen3Config(**model.config.to_hf_dict())
    hf = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.bfloat16).to(device).eval()
    hf.load_state_dict(model.state_dict())
    ids = torch.tensor(prompts, device=device)
    kw = dict(
        attention_mask=torch.ones_like(ids),
        do_sample=True,
        temperature=0.8,
        top_k=0,
        top_p=1.0,
        num_return_sequences=shape.group,
        eos_token_id=list(stops),
        pad_token_id=0,
    )
    with torch.no_grad():
        hf.generate(ids[:4], max_new_tokens=32, **kw)  # warm-up
        reset_peak(device)
        sync(device)
        t0 = time.perf_counter()
        try:
            out = hf.generate(ids, max_new_tokens=shape.new_tokens, **kw)
        except torch.OutOfMemoryError:
            return {"error": "out of memory", "peak_GiB": peak_gib(device)}
        sync(device)
    seconds = time.perf_counter() - t0
    new = out[:, ids.shape[1] :]  # (N, T): pad after a row's stop token
    is_stop = torch.isin(new, torch.tensor(stops, device=device))
    first = torch.where(is_stop.any(-1), is_stop.int().argmax(-1) + 1, new.shape[1])  # tokens up to the stop
    del hf
    return {
        "seconds": round(seconds, 3),
        "new_tokens": int(first.sum()),
        "tokens_per_s": round(float(first.sum()) / seconds),
        "steps": int(new.shape[1]),
        "peak_GiB": peak_gib(device),
    }


# ------------------------------------------------------------------------------------------ GRPO update


def run_update(model, prompts, gen, shape: Shape, device, peak_tflops: float) -> dict:
    """One GRPO update (forward + backward over every sequence, clip, fused AdamW) in the trainer's setting:
    float32 master weights and bfloat16 autocast. Timed on the second of two updates."""
    from rpt_core.model.logprobs import LogprobModule
    from rpt_train.rl.objective_rpt import RptObjective
    from rpt_train.rl.rollout import RolloutBatch
    from rpt_train.rl.update import MicroBatchPlan, MicroBatchSettings, backward_micro_batches

    with torch.device(device):
        policy = Qwen3ForCausalLM(model.config)
    policy.load_state_dict(model.state_dict())  # float32 copies of the rollout model's weights
    policy.float().train()
    n = gen.tokens.shape[0]
    prompt_ids = torch.tensor(prompts, device=device)
    batch = RolloutBatch(
        prompt_ids=prompt_ids,
        prompt_mask=torch.ones_like(prompt_ids, dtype=torch.bool),
        completion_ids=gen.tokens,
        completion_mask=gen.mask,
        gen_logprobs=gen.logprobs,
        truncated=~gen.finished,
        format_failed=torch.zeros(n, dtype=torch.bool, device=device),
        predictions=[None] * n,
        rows=[{}] * len(prompts),
        group_size=shape.group,
        advantages=torch.randn(n, generator=torch.Generator().manual_seed(0)).to(device),
    )
    objective = RptObjective()
    module = LogprobModule(policy)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6, fused=device.type == "cuda")
    mask = batch.loss_mask()
    plan = MicroBatchPlan(-(-n // shape.micro_batch), float(objective.loss_agg.normaliser(mask)))
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
        if device.type == "cuda"
        else (lambda: torch.autocast("cpu", enabled=False))
    )
    settings = MicroBatchSettings(
        objective, temperature=0.8, micro_batch_size=shape.micro_batch, autocast=autocast
    )

    def update():
        optimizer.zero_grad(set_to_none=True)
        backward_micro_batches(module, batch, loss_mask=mask, settings=settings, plan=plan)
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()

    update()  # warm-up: allocator, cuBLAS handles, AdamW state
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    update()
    sync(device)
    seconds = time.perf_counter() - t0
    cfg = policy.config
    completion = int(gen.mask.sum())
    tokens = n * shape.prompt_len + completion
    flops = update_flops(cfg, n, shape.prompt_len, gen.lengths().tolist())
    return {
        "seconds": round(seconds, 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / seconds),
        "model_TFLOP": round(flops / 1e12, 1),
        "MFU": round(flops / seconds / (peak_tflops * 1e12), 3) if peak_tflops else None,
        "peak_GiB": peak_gib(device),
        "micro_batch": shape.micro_batch,
    }


# ------------------------------------------------------------------------------------------ objectives


@dataclass
class StepShape:
    contexts: int = 8
    group: int = 8
    new_tokens: int = 128
    steps: int = 3  # the first is a warm-up


QUICK_STEPS = StepShape(contexts=2, group=4, new_tokens=8, steps=2)


def run_objective_steps(model, device, quick: bool) -> dict:
    """Seconds per trainer step of each objective (RPT, then RLP with its EMA baseline) from the same
    random weights: the ``think`` template, ``contexts`` x G rollouts of up to ``new_tokens`` thought
    tokens, float32 master weights with bfloat16 autocast and fused AdamW on CUDA. The data are the test
    suite's tiny task and tokenizer (the model samples ids past that tokenizer's 20 tokens, which decode to
    nothing, so no thought closes itself: every rollout runs to the cap and RPT's rewards are 0; the step
    still does all its work). Median of the steps after the warm-up."""
    import statistics
    import tempfile

    from rpt_train.rl.config import TrainConfig
    from rpt_train.rl.trainer import Trainer
    from tests.helpers import tiny_tokenizer, write_task_shards

    shape = QUICK_STEPS if quick else StepShape()
    tok = tiny_tokenizer(think=True)
    results = {"shape": shape.__dict__}
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_task_shards(Path(tmp) / "shards", tok, n_train=64, n_val=4, repeat=True)
        model_dir = Path(tmp) / "model"
        model.save_pretrained(model_dir)
        tok.save(model_dir)
        for objective in ("rpt", "rlp"):
            cfg = TrainConfig.from_flat(
                shards=str(shards),
                model=str(model_dir),
                out=str(Path(tmp) / objective),
                objective=objective,
                template="think",
                max_new_tokens=shape.new_tokens,
                batch_size=shape.contexts,
                num_generations=shape.group,
                micro_batch_size=16,
                max_steps=shape.steps,
                lr=1e-6,
                warmup_steps=0,
                save_every=0,
                sample_every=0,
                quiet=True,
                device=device.type,
                bf16=device.type == "cuda",
            )
            trainer = Trainer(cfg)
            reset_peak(device)
            seconds, metrics = [], {}
            for _ in range(shape.steps):
                sync(device)
                t0 = time.perf_counter()
                metrics = trainer.train_step() or {}
                sync(device)
                seconds.append(time.perf_counter() - t0)
            timed = seconds[1:] or seconds
            results[objective] = {
                "seconds_per_step": round(statistics.median(timed), 3),
                **{
                    k: round(float(metrics[k]), 3)
                    for k in ("time_generate", "time_score", "time_update")
                    if k in metrics
                },
                "completion_len_mean": round(float(metrics.get("completion_len_mean", 0.0)), 1),
                "peak_GiB": peak_gib(device),
            }
            del trainer
    return results


# ------------------------------------------------------------------------------------------ main


def release(device) -> None:
    """Hand the freed memory of a finished part back, so the next part's peak is its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def part(results: Results, key: str, fn, device):
    """Run one part and record its result under ``key``; a failure is recorded as its one-line error and
    the check goes on to the next part (every part's figures survive any other's failure)."""
    try:
        value = fn()
    except Exception as e:  # noqa: BLE001 - any failure of one part must leave the others
        results.put(key, {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"})
        value = None
    release(device)
    return value


def measure(out: Path, quick: bool) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = Results(out)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    spec = gpu_spec(name)
    results.put(
        "device",
        {
            "name": name,
            "torch": torch.__version__,
            "peak_bf16_TFLOPs": spec.bf16_tflops,
            "hbm_TBps": spec.hbm_tbps,
            "cuda": torch.version.cuda,
        },
    )
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 master-weight paths use tensor cores
        part(results, "ceilings", lambda: results.put("ceilings", measure_ceilings(device)), device)
    shape = QUICK if quick else Shape()
    model = build_model(device, quick)
    prompts, stops, params = workload(shape, model.config.vocab_size, device)
    results.put("shape", {**shape.__dict__, "stop_ids": len(stops), "params": model.num_parameters()})
    state: dict = {}

    def eager():
        r, state["gen"] = run_ours(model, prompts, params, shape, DecodeOptions(), device)
        lengths = r.pop("lengths")
        results.put("rollout_ours_eager", r)
        results.put("rollout_prediction", predict_rollout(model.config, shape.prompt_len, lengths, spec))

    def compiled():
        r, _ = run_ours(model, prompts, params, shape, DecodeOptions(compile=True), device)
        r.pop("lengths")
        results.put("rollout_ours_compiled", r)

    part(results, "rollout_ours_eager", eager, device)
    if device.type == "cuda":  # inductor on a CPU takes minutes to compile; the CPU tests check the shapes
        part(results, "rollout_ours_compiled", compiled, device)
    part(
        results,
        "rollout_transformers",
        lambda: results.put("rollout_transformers", run_transformers(model, prompts, stops, shape, device)),
        device,
    )
    if "gen" in state:
        part(
            results,
            "grpo_update",
            lambda: results.put(
                "grpo_update", run_update(model, prompts, state.pop("gen"), shape, device, spec.bf16_tflops)
            ),
            device,
        )
    state.clear()
    release(device)
    steps = lambda: results.put("objective_steps", run_objective_steps(model, device, quick))  # noqa: E731
    part(results, "objective_steps", steps, device)


def summary(out: Path) -> str:
    """One table from OUT's files: tests (junit XML + reported figures) and throughput.json."""
    lines = ["| check | result |", "|---|---|"]
    add = lambda label, text: lines.append(f"| {label} | {text} |")  # noqa: E731
    junit = out / "gpu_tests.xml"
    if junit.exists():
        root = ET.parse(junit).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        failed = n["failures"] + n["errors"]
        passed = n["tests"] - failed - n["skipped"]
        add("gpu tests", f"{passed} passed, {failed} failed, {n['skipped']} skipped")
        for case in suite.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                add("FAILED", case.get("name"))
    else:
        add("gpu tests", "did not run (no gpu_tests.xml)")
    report = out / "gpu_tests.jsonl"
    for line in report.read_text().splitlines() if report.exists() else []:
        item = json.loads(line)
        add(item["key"], item["value"])
    path = out / RESULTS
    data = json.loads(path.read_text()) if path.exists() else {}
    if "device" in data:
        d = data["device"]
        add(
            "device",
            f"{d['name']} (torch {d['torch']}, CUDA {d['cuda']}; datasheet: bf16 "
            f"{d['peak_bf16_TFLOPs']} TFLOP/s, HBM {d['hbm_TBps']} TB/s)",
        )
    if "error" in data.get("ceilings", {}):
        add("measured ceilings", data["ceilings"]["error"])
    elif "ceilings" in data:
        c = data["ceilings"]
        add("measured ceilings", f"copy {c['copy_TBps']} TB/s, bf16 matmul {c['bf16_matmul_TFLOPs']} TFLOP/s")
    hf = data.get("rollout_transformers")
    for key, label in (
        ("rollout_ours_eager", "rollout, ours (eager)"),
        ("rollout_ours_compiled", "rollout, ours (compiled + CUDA graphs)"),
    ):
        r = data.get(key)
        if not r or "error" in r:
            add(label, r["error"] if r else "not measured")
            continue
        text = (
            f"{r['tokens_per_s']:,} new tok/s ({r['new_tokens']:,} tokens in {r['seconds']} s, "
            f"length mean {r['mean_len']} / max {r['max_len']}; peak {r['peak_GiB']} GiB)"
        )
        if hf and "error" not in hf:
            text += f"; {r['tokens_per_s'] / hf['tokens_per_s']:.1f}x transformers"
        add(label, text)
    if hf and "error" not in hf:
        add(
            "rollout, transformers generate",
            f"{hf['tokens_per_s']:,} new tok/s ({hf['seconds']} s, "
            f"{hf['steps']} steps; peak {hf['peak_GiB']} GiB)",
        )
    elif hf:
        add("rollout, transformers generate", f"{hf['error']} (peak {hf.get('peak_GiB')} GiB)")
    pred = data.get("rollout_prediction")
    if pred and "floor_tokens_per_s" in pred:
        add(
            "rollout prediction (benchmarks/GPU.md, these lengths)",
            f"eager {pred['eager_tokens_per_s']:,}, captured {pred['captured_tokens_per_s']:,}, bandwidth "
            f"floor {pred['floor_tokens_per_s']:,} new tok/s",
        )
    up = data.get("grpo_update")
    if up and "error" in up:
        add("GRPO update", up["error"])
    elif up:
        mfu = "-" if up["MFU"] is None else f"{100 * up['MFU']:.1f}%"
        add(
            "GRPO update (fp32 weights, bf16 autocast, fused AdamW)",
            f"{up['tokens_per_s']:,} tok/s ({up['tokens']:,} tokens in {up['seconds']} s), MFU {mfu} "
            f"({up['model_TFLOP']} TFLOP); peak {up['peak_GiB']} GiB",
        )
    steps = data.get("objective_steps")
    if steps and "error" in steps:
        add("trainer steps", steps["error"])
        steps = None
    for objective in ("rpt", "rlp"):
        r = (steps or {}).get(objective)
        if r:
            sh = steps["shape"]
            label = f"trainer step, {objective} ({sh['contexts']} x G {sh['group']}, <= {sh['new_tokens']})"
            split = f"generate {r.get('time_generate')} s, score {r.get('time_score')} s"
            add(
                label,
                f"{r['seconds_per_step']} s/step ({split}, update {r.get('time_update')} s); "
                f"peak {r['peak_GiB']} GiB",
            )
    table = "\n".join(lines)
    (out / "summary.md").write_text(table + "\n")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="measure, writing OUT/throughput.json")
    parser.add_argument("--summary", type=Path, help="print the table of a finished check directory")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (runs on CPU too)")
    args = parser.parse_args()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        measure(args.out, args.quick)
    if args.summary:
        print(summary(args.summary))


if __name__ == "__main__":
    main()
