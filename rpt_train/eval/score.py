"""Next-token accuracy on held-out RPT shards, split into easy / medium / hard positions (RPT Table 1).

A position belongs to every bucket whose entropy threshold it reaches (easy >= 0.5, medium >= 1.0,
hard >= 1.5), as in the paper. Every mode gives each position a verdict in [0, 1]:

* ``ntp``: standard next-token prediction; 1 when the greedy next token after the raw context is the
  shard row's ground-truth ``token_id``.
* ``reasoning``: next-token reasoning through the *training* rollout path (``rpt_train.rl.rollout``: the
  same template, prompt truncation, stop ids and cut-off rule) scored by the same reward code
  (``rpt_core.reward.score_rows``); 1 when the greedy rollout earns the full reward.
* ``sampled``: the same with ``samples`` rollouts at the training temperature; the verdict is the share
  of them that earn the full reward (how often the policy itself is right).

The functions here are small and pure where they can be (bucketing, sample choice, scoring a batch) so
the tests can hand-check them; ``rpt_train.eval.run`` runs them over models and ``rpt_train.eval.report``
turns results into tables and plots.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rpt_core.model import Qwen3ForCausalLM
from rpt_core.model.generation import SamplingParams, generate
from rpt_core.reward import REWARDS, score_rows
from rpt_core.runtime.config import option
from rpt_core.runtime.progress import Progress
from rpt_core.text.chat_template import Chat
from rpt_core.text.prompts import TEMPLATES, PromptTemplate, load_template
from rpt_core.text.tokenizer import Tokenizer
from rpt_train.rl.rollout import RolloutSpec, rollout, sampling_params

BUCKETS: dict[str, float] = {"easy": 0.5, "medium": 1.0, "hard": 1.5}
MODES = ("ntp", "reasoning", "sampled")
DEFAULT_MODES = ("ntp", "reasoning")


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


def bucket_verdicts(rows: Sequence[dict[str, Any]], verdicts: Sequence[float]) -> dict[str, list[float]]:
    """{bucket: the verdicts of the rows that count in it}, in row order (so two models pair up)."""
    out: dict[str, list[float]] = {name: [] for name in BUCKETS}
    for row, v in zip(rows, verdicts, strict=True):
        for name in row_buckets(row):
            out[name].append(float(v))
    return out


def accuracy_by_bucket(
    rows: Sequence[dict[str, Any]], verdicts: Sequence[float]
) -> dict[str, dict[str, float]]:
    """{bucket: {"correct", "total", "accuracy"}} over the rows' buckets (accuracy NaN for an empty one)."""
    table = {}
    for name, values in bucket_verdicts(rows, verdicts).items():
        n = len(values)
        table[name] = {"correct": sum(values), "total": n, "accuracy": sum(values) / n if n else float("nan")}
    return table


def encode_prompts(tok: Tokenizer, texts: Sequence[str], max_prompt_tokens: int) -> list[list[int]]:
    """Token ids of each prompt, left-truncated to the last ``max_prompt_tokens`` (the end matters most)."""
    return [ids[-max_prompt_tokens:] or [tok.pad_id or 0] for ids in tok.encode_batch(list(texts))]


@dataclass
class RolloutOptions:
    """The rollout options every command that rolls out as training does shares (``rpt-train eval``,
    ``rpt-train passrate``): one definition of their names, defaults, bounds and help."""

    template: str = option("plain", "Prompt template of the rollouts (as in training).", choices=TEMPLATES)
    answer_tokens: int = option(1, "plain / think: tokens that form the prediction.", ge=1)
    instruction_file: str | None = option(None, "Replace the template's instruction text.")
    reward: str = option(
        "prefix", "The training reward; a rollout counts as correct when it earns 1.", choices=REWARDS
    )
    max_prompt_tokens: int = option(512, "Contexts are left-truncated to this many tokens.", ge=1)
    max_new_tokens: int = option(256, "Completion cap; a cut-off completion is wrong.", ge=1)
    batch_size: int = option(32, "Positions per generate() call.", ge=1)
    device: str | None = option(None, "cpu | cuda | cuda:N (default: CUDA when present).")
    dtype: str | None = option(
        None, "Model dtype (default: the checkpoint's).", choices=("float32", "bfloat16")
    )

    def eval_settings(self, chat: Chat | None, temperature: float, seed: int, samples: int) -> EvalSettings:
        """These options as the scorers take them; ``chat`` is the model's own chat format."""
        template = load_template(self.template, self.instruction_file, self.answer_tokens, chat)
        return EvalSettings(
            template,
            self.max_prompt_tokens,
            self.max_new_tokens,
            temperature,
            self.batch_size,
            seed,
            self.reward,
            samples,
        )


@dataclass
class EvalSettings:
    template: PromptTemplate
    max_prompt_tokens: int = 512
    max_new_tokens: int = 256
    temperature: float = 0.8  # of the sampled mode (the training temperature)
    batch_size: int = 32
    seed: int = 0
    reward: str = "prefix"  # the training reward; a rollout is correct when it earns 1
    samples: int = 4  # rollouts per position in the sampled mode

    def rollout_spec(self, tok: Tokenizer, samples: int = 0) -> RolloutSpec:
        """The training rollout: greedy (``samples`` 0) or ``samples`` completions at ``temperature``."""
        greedy = samples == 0
        params = sampling_params(self.template, tok, self.max_new_tokens, self.temperature, greedy=greedy)
        return RolloutSpec(
            params, max(1, samples), max_prompt_tokens=self.max_prompt_tokens, pad_id=tok.pad_id or 0
        )


@torch.no_grad()
def ntp_correct(
    model: Qwen3ForCausalLM,
    tok: Tokenizer,
    rows: Sequence[dict],
    s: EvalSettings,
    progress: Progress | None = None,
) -> list[bool]:
    """The greedy next token after the raw context is the row's ground-truth ``token_id``."""
    out: list[bool] = []
    params = SamplingParams(max_new_tokens=1, greedy=True)
    for i in range(0, len(rows), s.batch_size):
        chunk = rows[i : i + s.batch_size]
        prompts = encode_prompts(tok, [r["context"] for r in chunk], s.max_prompt_tokens)
        gen = generate(model, prompts, params, pad_id=tok.pad_id or 0)
        out += [t == int(r["token_id"]) for r, t in zip(chunk, gen.tokens[:, 0].tolist(), strict=True)]
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
    """The greedy training rollout earns the full training reward."""
    return [v == 1.0 for v in _rollout_verdicts(model, tok, rows, s, 0, progress)]


@torch.no_grad()
def sampled_accuracy(
    model: Qwen3ForCausalLM,
    tok: Tokenizer,
    rows: Sequence[dict],
    s: EvalSettings,
    progress: Progress | None = None,
) -> list[float]:
    """The share of ``s.samples`` seeded training rollouts at ``s.temperature`` that earn the full reward."""
    return _rollout_verdicts(model, tok, rows, s, s.samples, progress)


def _rollout_verdicts(model, tok, rows, s: EvalSettings, samples: int, progress) -> list[float]:
    out: list[float] = []
    spec = s.rollout_spec(tok, samples)
    generator = torch.Generator(device=model.device).manual_seed(s.seed)
    for i in range(0, len(rows), s.batch_size):
        chunk = list(rows[i : i + s.batch_size])
        batch = rollout(model, tok, s.template, chunk, spec, generator)
        rewards = score_rows(batch.predictions, chunk, spec.num_generations, s.reward)  # (n, G)
        out += (rewards == 1.0).float().mean(dim=1).tolist()
        if progress is not None:
            progress.update(len(chunk), tokens=int(batch.completion_mask.sum()))
    return out


SCORERS = {"ntp": ntp_correct, "reasoning": reasoning_correct, "sampled": sampled_accuracy}


def evaluate_model(
    model: Qwen3ForCausalLM,
    tok: Tokenizer,
    rows: Sequence[dict],
    s: EvalSettings,
    modes: Sequence[str] = DEFAULT_MODES,
    progress: Progress | None = None,
) -> dict[str, list[float]]:
    """{mode: one verdict in [0, 1] per row} for one model on the selected rows.

    ``progress`` (optional) advances by one per position and mode.
    """
    model.eval()
    return {mode: [float(v) for v in SCORERS[mode](model, tok, rows, s, progress)] for mode in modes}
