"""Next-token accuracy on held-out RPT shards, split into easy / medium / hard positions (RPT Table 1).

A position belongs to every bucket whose entropy threshold it reaches (easy >= 0.5, medium >= 1.0,
hard >= 1.5), as in the paper. Two modes:

* ``ntp``: standard next-token prediction; the greedy next token's bytes equal the first ground-truth
  token's bytes.
* ``reasoning``: next-token reasoning; the template's rollout (greedy, or one sample at a set temperature)
  earns the prefix reward 1.

The functions here are small and pure where they can be (bucketing, sample choice, scoring a batch) so
the tests can hand-check them; ``rpt_train.eval_report`` turns results into tables and plots.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rpt_train.generate import SamplingParams, generate
from rpt_train.model import Qwen3ForCausalLM
from rpt_train.prompts import PromptTemplate
from rpt_train.reward import prefix_reward
from rpt_train.tokenizer import Tokenizer

BUCKETS: dict[str, float] = {"easy": 0.5, "medium": 1.0, "hard": 1.5}
MODES = ("ntp", "reasoning")


def buckets_of(entropy: float) -> list[str]:
    """The buckets a position with this entropy belongs to (nested: a hard position is also easy)."""
    return [name for name, threshold in BUCKETS.items() if entropy >= threshold]


def _order_key(seed: int, row: dict[str, Any]) -> str:
    return hashlib.sha256(f"{seed}:{row['doc_id']}:{row['position']}".encode()).hexdigest()


def select_samples(
    rows: Sequence[dict[str, Any]], max_samples: int | None, seed: int = 0
) -> list[dict[str, Any]]:
    """A deterministic subset in which every bucket holds at most ``max_samples`` positions.

    Rows are ranked by a seeded hash of (doc_id, position); walking that order, a row is kept while some
    bucket it belongs to still has room. The same shards and seed always give the same subset.
    """
    ranked = sorted((r for r in rows if buckets_of(r["entropy"])), key=lambda r: _order_key(seed, r))
    if max_samples is None:
        return ranked
    counts = dict.fromkeys(BUCKETS, 0)
    kept = []
    for row in ranked:
        names = buckets_of(row["entropy"])
        if any(counts[n] < max_samples for n in names):
            kept.append(row)
            for n in names:
                counts[n] += 1
    return kept


def accuracy_by_bucket(
    rows: Sequence[dict[str, Any]], correct: Sequence[bool]
) -> dict[str, dict[str, float]]:
    """{bucket: {"correct", "total", "accuracy"}} over the rows' buckets."""
    table = {name: {"correct": 0, "total": 0} for name in BUCKETS}
    for row, ok in zip(rows, correct, strict=True):
        for name in buckets_of(row["entropy"]):
            table[name]["total"] += 1
            table[name]["correct"] += int(bool(ok))
    for cell in table.values():
        cell["accuracy"] = cell["correct"] / cell["total"] if cell["total"] else float("nan")
    return table


def first_token_bytes(row: dict[str, Any]) -> bytes:
    return bytes(row["label"])[: row["boundaries"][0]]


def encode_prompts(tok: Tokenizer, texts: Sequence[str], max_prompt_tokens: int) -> list[list[int]]:
    """Token ids of each prompt, left-truncated to the last ``max_prompt_tokens`` (the end matters most)."""
    return [ids[-max_prompt_tokens:] or [tok.pad_id or 0] for ids in tok.encode_batch(list(texts))]


@dataclass
class EvalSettings:
    template: PromptTemplate
    max_prompt_tokens: int = 512
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 -> greedy
    batch_size: int = 32
    seed: int = 0


@torch.no_grad()
def ntp_correct(model: Qwen3ForCausalLM, tok: Tokenizer, rows: Sequence[dict], s: EvalSettings) -> list[bool]:
    """Greedy next token after the raw context equals the ground-truth token (compared as bytes)."""
    out: list[bool] = []
    params = SamplingParams(max_new_tokens=1, greedy=True)
    for i in range(0, len(rows), s.batch_size):
        chunk = rows[i : i + s.batch_size]
        prompts = encode_prompts(tok, [r["context"] for r in chunk], s.max_prompt_tokens)
        gen = generate(model, prompts, params, pad_id=tok.pad_id or 0)
        for row, token in zip(chunk, gen.tokens[:, 0].tolist(), strict=True):
            out.append(tok.token_bytes(token) == first_token_bytes(row))
    return out


@torch.no_grad()
def reasoning_correct(
    model: Qwen3ForCausalLM, tok: Tokenizer, rows: Sequence[dict], s: EvalSettings
) -> list[bool]:
    """The template's rollout (greedy or one seeded sample) earns the prefix reward 1."""
    out: list[bool] = []
    max_new = getattr(s.template, "max_new_tokens", None) or s.max_new_tokens
    params = SamplingParams(
        max_new_tokens=max_new,
        temperature=s.temperature or 1.0,
        greedy=s.temperature <= 0,
        stop_token_ids=tuple(t for t in (tok.eos_id, tok.pad_id) if t is not None),
    )
    generator = torch.Generator(device=model.device).manual_seed(s.seed)
    for i in range(0, len(rows), s.batch_size):
        chunk = rows[i : i + s.batch_size]
        prompts = encode_prompts(tok, [s.template.render(r["context"]) for r in chunk], s.max_prompt_tokens)
        gen = generate(model, prompts, params, generator=generator, pad_id=tok.pad_id or 0)
        for j, row in enumerate(chunk):
            ids = gen.tokens[j][gen.mask[j]].tolist()
            prediction = s.template.extract_ids(ids, tok.decode)
            out.append(prefix_reward(prediction, bytes(row["label"]), row["boundaries"]) == 1.0)
    return out


SCORERS = {"ntp": ntp_correct, "reasoning": reasoning_correct}


def evaluate_model(
    model: Qwen3ForCausalLM,
    tok: Tokenizer,
    rows: Sequence[dict],
    s: EvalSettings,
    modes: Sequence[str] = MODES,
) -> dict[str, dict[str, dict[str, float]]]:
    """{mode: {bucket: {"correct", "total", "accuracy"}}} for one model on the selected rows."""
    model.eval()
    return {mode: accuracy_by_bucket(rows, SCORERS[mode](model, tok, rows, s)) for mode in modes}
