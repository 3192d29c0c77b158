"""Next-token accuracy on held-out RPT shards, split into easy / medium / hard positions (RPT Table 1).

A position belongs to every bucket whose entropy threshold it reaches (easy >= 0.5, medium >= 1.0,
hard >= 1.5), as in the paper. Two modes:

* ``ntp``: standard next-token prediction; the greedy next token's bytes equal the first ground-truth
  token's bytes.
* ``reasoning``: next-token reasoning; the template's rollout (greedy, or one sample at a set temperature)
  earns the prefix reward 1.

The functions here are small and pure where they can be (bucketing, sample choice, scoring a batch) so
the tests can hand-check them; ``rpt_train.eval_run`` turns results into tables and plots.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rpt_train.generate import SamplingParams, generate
from rpt_train.model import Qwen3ForCausalLM
from rpt_train.progress import Progress
from rpt_train.prompts import PromptTemplate
from rpt_train.reward import prefix_reward
from rpt_train.rollout import encode_prompts as encode_rendered_prompts
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

    Rows are ranked by a seeded hash of (doc_id, position); each bucket takes the first ``max_samples`` of
    its own positions in that order, so every bucket is a uniform sample of its positions (a row kept only
    because the hard bucket had room must not inflate the easy bucket, which would over-weight hard
    positions there). Kept rows are copies carrying ``"buckets"``: the buckets they were chosen for, which
    ``accuracy_by_bucket`` counts them in. The same shards and seed always give the same subset.
    """
    ranked = sorted((r for r in rows if buckets_of(r["entropy"])), key=lambda r: _order_key(seed, r))
    counts = dict.fromkeys(BUCKETS, 0)
    kept = []
    for row in ranked:
        chosen = [n for n in buckets_of(row["entropy"]) if max_samples is None or counts[n] < max_samples]
        if chosen:
            kept.append({**row, "buckets": chosen})
            for n in chosen:
                counts[n] += 1
    return kept


def row_buckets(row: dict[str, Any]) -> list[str]:
    """The buckets a row counts in: those ``select_samples`` chose it for, else all its entropy reaches."""
    chosen = row.get("buckets")
    return list(chosen) if chosen is not None else buckets_of(row["entropy"])


def accuracy_by_bucket(
    rows: Sequence[dict[str, Any]], correct: Sequence[bool]
) -> dict[str, dict[str, float]]:
    """{bucket: {"correct", "total", "accuracy"}} over the rows' buckets (accuracy NaN for an empty one)."""
    table = {name: {"correct": 0, "total": 0} for name in BUCKETS}
    for row, ok in zip(rows, correct, strict=True):
        for name in row_buckets(row):
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


def encode_template_prompts(
    tok: Tokenizer, template: PromptTemplate, contexts: Sequence[str], max_prompt_tokens: int
) -> list[list[int]]:
    """The trainer's prompts: the context truncated first, then rendered (a chat header is never cut off)."""
    prompts = encode_rendered_prompts(tok, template, contexts, max_prompt_tokens)
    return [ids or [tok.pad_id or 0] for ids in prompts]


@dataclass
class EvalSettings:
    template: PromptTemplate
    max_prompt_tokens: int = 512
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 -> greedy
    batch_size: int = 32
    seed: int = 0


@torch.no_grad()
def ntp_correct(
    model: Qwen3ForCausalLM,
    tok: Tokenizer,
    rows: Sequence[dict],
    s: EvalSettings,
    progress: Progress | None = None,
) -> list[bool]:
    """Greedy next token after the raw context equals the ground-truth token (compared as bytes)."""
    out: list[bool] = []
    params = SamplingParams(max_new_tokens=1, greedy=True)
    for i in range(0, len(rows), s.batch_size):
        chunk = rows[i : i + s.batch_size]
        prompts = encode_prompts(tok, [r["context"] for r in chunk], s.max_prompt_tokens)
        gen = generate(model, prompts, params, pad_id=tok.pad_id or 0)
        known = len(tok.token_bytes_table)  # a model's vocabulary may be padded past the tokenizer's
        for row, token in zip(chunk, gen.tokens[:, 0].tolist(), strict=True):
            out.append(token < known and tok.token_bytes(token) == first_token_bytes(row))
        if progress is not None:
            progress.update(len(chunk))
    return out


@torch.no_grad()
def reasoning_correct(
    model: Qwen3ForCausalLM,
    tok: Tokenizer,
    rows: Sequence[dict],
    s: EvalSettings,
    progress: Progress | None = None,
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
        prompts = encode_template_prompts(tok, s.template, [r["context"] for r in chunk], s.max_prompt_tokens)
        gen = generate(model, prompts, params, generator=generator, pad_id=tok.pad_id or 0)
        for j, row in enumerate(chunk):
            ids = gen.tokens[j][gen.mask[j]].tolist()
            prediction = s.template.extract_ids(ids, tok.decode)
            out.append(prefix_reward(prediction, bytes(row["label"]), row["boundaries"]) == 1.0)
        if progress is not None:
            progress.update(len(chunk), tokens=int(gen.mask.sum()))
    return out


SCORERS = {"ntp": ntp_correct, "reasoning": reasoning_correct}


def evaluate_model(
    model: Qwen3ForCausalLM,
    tok: Tokenizer,
    rows: Sequence[dict],
    s: EvalSettings,
    modes: Sequence[str] = MODES,
    progress: Progress | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """{mode: {bucket: {"correct", "total", "accuracy"}}} for one model on the selected rows.

    ``progress`` (optional) advances by one per position and mode.
    """
    model.eval()
    return {mode: accuracy_by_bucket(rows, SCORERS[mode](model, tok, rows, s, progress)) for mode in modes}
