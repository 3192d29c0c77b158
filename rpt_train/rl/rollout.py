"""One rollout: contexts -> prompts -> G sampled completions -> predictions.

Functions, not a class: ``rollout`` turns a list of shard rows into a ``RolloutBatch`` (tensors on the
model's device, rows prompt-major: sequence i*G + j is sample j of context i). The batch is *unscored*:
an objective (``rpt_train.rl.objective``) fills in rewards and advantages, and the evaluator scores the
same predictions with the same reward code. ``select_groups`` and ``concat_rollouts`` let DAPO dynamic
sampling (``DynamicSampling``) keep only the groups with unequal rewards and top the batch up with more
draws. ``sample_records`` picks the completions the trainer logs as samples.

A completion cut off at ``max_new_tokens`` has no prediction (reward = the format penalty) unless the
template itself caps generation (``plain``: the prediction *is* the first ``answer_tokens`` tokens).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from rpt_core.model.decode import DecodeOptions
from rpt_core.model.generation import SamplingParams, free_device_memory, generate, left_pad, rows_that_fit
from rpt_core.text.prompts import PromptTemplate
from rpt_core.text.tokenizer import Tokenizer, keep_last_tokens


@dataclass(frozen=True)
class RolloutSpec:
    """How to roll out: sampling, group size, prompt length, generate() batching and its decode loop."""

    sampling: SamplingParams
    num_generations: int = 8
    max_prompt_tokens: int = 1024
    rollout_batch_size: int = 0  # contexts per generate() call; 0 = all at once (CUDA: as many as fit)
    pad_id: int = 0
    decode: DecodeOptions = DecodeOptions()


@dataclass
class RolloutBatch:
    prompt_ids: torch.Tensor  # (n, P) long, left-padded, one row per context
    prompt_mask: torch.Tensor  # (n, P) bool
    completion_ids: torch.Tensor  # (n*G, T) long, right-padded with pad_id
    completion_mask: torch.Tensor  # (n*G, T) bool: generated tokens incl. the stop token
    gen_logprobs: torch.Tensor  # (n*G, T) float32 from the sampler (0 off the mask)
    truncated: torch.Tensor  # (n*G,) bool: cut off at max_new_tokens with no template cap
    format_failed: torch.Tensor  # (n*G,) bool: no extractable prediction
    predictions: list[str | None]  # (n*G,)
    rows: list[dict]  # (n,) the shard rows (context, label, boundaries, ...)
    group_size: int  # G
    rewards: torch.Tensor | None = None  # (n, G) float32, set by the objective
    advantages: torch.Tensor | None = None  # (n*G,) float32, set by the objective
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of "generate" and "reward"
    # Set by an objective that needs them: its own per-context numbers (every tensor (n, ...), one row per
    # group, so selecting and concatenating groups keeps them aligned) and the tokens its scoring forwards
    # ran over (counted as training compute, rpt_train.compute).
    details: dict[str, torch.Tensor] = field(default_factory=dict)
    score_tokens: int = 0

    @property
    def num_groups(self) -> int:
        return len(self.rows)

    @property
    def num_sequences(self) -> int:
        return self.completion_ids.shape[0]

    def loss_mask(self, mask_truncated: bool = False) -> torch.Tensor:
        """(n*G, T) bool: tokens that enter the loss (truncated completions dropped when asked)."""
        if not mask_truncated:
            return self.completion_mask
        return self.completion_mask & ~self.truncated[:, None]

    def sequences(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(input_ids (n*G, P+T), attention_mask (n*G, P+T), P): prompt then completion, per sequence."""
        G = self.group_size
        ids = torch.cat([self.prompt_ids.repeat_interleave(G, 0), self.completion_ids], dim=1)
        mask = torch.cat([self.prompt_mask.repeat_interleave(G, 0), self.completion_mask], dim=1)
        return ids, mask.long(), self.prompt_ids.shape[1]


# ---------------------------------------------------------------------------------------------- prompts


def truncate_context(tokenizer: Tokenizer, context: str, max_tokens: int) -> str:
    """The last ``max_tokens`` tokens of ``context`` (``rpt_core.text.tokenizer.keep_last_tokens``)."""
    return keep_last_tokens(tokenizer, [context], max_tokens)[0]


def encode_prompts(
    tokenizer: Tokenizer, template: PromptTemplate, contexts: Sequence[str], max_prompt_tokens: int
) -> list[list[int]]:
    """Token ids of each rendered prompt, the context left-truncated to ``max_prompt_tokens`` first."""
    return [
        tokenizer.encode(template.render(truncate_context(tokenizer, c, max_prompt_tokens))) for c in contexts
    ]


def stop_token_ids(tokenizer: Tokenizer) -> tuple[int, ...]:
    """End-of-turn and end-of-text ids the tokenizer has (and its declared EOS): generation stops at any."""
    return tokenizer.stop_ids


def sampling_params(
    template: PromptTemplate,
    tokenizer: Tokenizer,
    max_new_tokens: int,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
) -> SamplingParams:
    """Sampling settings; a template with its own cap (``plain``) replaces ``max_new_tokens``, and one
    with a stopping rule (``think``: n tokens after ``</think>``) adds it.

    ``temperature`` 0 means greedy, as ``greedy=True`` does.
    """
    cap = template.max_new_tokens or max_new_tokens
    return SamplingParams(
        max_new_tokens=cap,
        temperature=1.0 if greedy else temperature,
        top_k=top_k,
        top_p=top_p,
        greedy=greedy,
        stop_token_ids=stop_token_ids(tokenizer),
        stop_after=template.stop_after(tokenizer.token_to_id),
    )


# ---------------------------------------------------------------------------------------------- rollout


def extract_predictions(
    tokenizer: Tokenizer,
    template: PromptTemplate,
    tokens: torch.Tensor,  # (N, T)
    mask: torch.Tensor,  # (N, T) bool
    truncated: torch.Tensor,  # (N,) bool
    stop_ids: Sequence[int],
) -> list[str | None]:
    """Each completion's prediction (None = nothing extractable, or cut off), stop token excluded."""
    stops = set(stop_ids)
    out: list[str | None] = []
    for ids, m, cut in zip(tokens.tolist(), mask.tolist(), truncated.tolist(), strict=True):
        if cut:
            out.append(None)
            continue
        ids = [t for t, keep in zip(ids, m, strict=True) if keep]
        if ids and ids[-1] in stops:
            ids = ids[:-1]
        out.append(template.extract_ids(ids, tokenizer.decode))
    return out


def rollout(
    model,
    tokenizer: Tokenizer,
    template: PromptTemplate,
    rows: Sequence[dict],
    spec: RolloutSpec,
    generator: torch.Generator | None = None,
) -> RolloutBatch:
    """Sample G completions for each row's context and extract each completion's prediction (unscored)."""
    prompts = encode_prompts(tokenizer, template, [r["context"] for r in rows], spec.max_prompt_tokens)
    step = spec.rollout_batch_size or contexts_per_call(model, prompts, spec)
    parts = [
        _rollout_chunk(model, tokenizer, template, rows[i : i + step], prompts[i : i + step], spec, generator)
        for i in range(0, len(prompts), step)
    ]
    return concat_rollouts(parts, spec.pad_id)


def contexts_per_call(model, prompts: Sequence[Sequence[int]], spec: RolloutSpec) -> int:
    """Contexts per generate() call when ``rollout_batch_size`` is 0: all of them on a CPU; on CUDA as
    many as fit in half the free memory (each generate() call allocates its whole KV cache up front)."""
    if model.device.type != "cuda":
        return len(prompts)
    free = free_device_memory(model.device)
    slots = max(len(p) for p in prompts) + spec.sampling.max_new_tokens
    return max(1, rows_that_fit(model, slots, free) // spec.num_generations)


def _rollout_chunk(model, tokenizer, template, rows, prompts, spec: RolloutSpec, generator) -> RolloutBatch:
    G = spec.num_generations
    t0 = time.perf_counter()
    gen = generate(model, prompts, spec.sampling, G, generator, spec.pad_id, spec.decode)
    t1 = time.perf_counter()
    capped = template.max_new_tokens is not None
    truncated = torch.zeros_like(gen.finished) if capped else ~gen.finished  # (N,)
    predictions = extract_predictions(
        tokenizer, template, gen.tokens, gen.mask, truncated, spec.sampling.stop_token_ids
    )
    device = gen.tokens.device
    prompt_ids, prompt_mask = left_pad(prompts, spec.pad_id, device)  # (n, P)
    return RolloutBatch(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=gen.tokens,
        completion_mask=gen.mask,
        gen_logprobs=gen.logprobs,
        truncated=truncated,
        format_failed=torch.tensor([p is None for p in predictions], device=device),
        predictions=predictions,
        rows=list(rows),
        group_size=G,
        seconds={"generate": t1 - t0, "extract": time.perf_counter() - t1},
    )


# ------------------------------------------------------------------------------------- dynamic sampling


def select_groups(batch: RolloutBatch, groups: Sequence[int]) -> RolloutBatch:
    """The sub-batch holding only ``groups`` (context indices), in that order."""
    G = batch.group_size
    g = torch.as_tensor(list(groups), dtype=torch.long, device=batch.completion_ids.device)  # (k,)
    seq = (g[:, None] * G + torch.arange(G, device=g.device)).reshape(-1)  # (k*G,)
    seq_list = seq.tolist()
    return replace(
        batch,
        prompt_ids=batch.prompt_ids[g],
        prompt_mask=batch.prompt_mask[g],
        completion_ids=batch.completion_ids[seq],
        completion_mask=batch.completion_mask[seq],
        gen_logprobs=batch.gen_logprobs[seq],
        truncated=batch.truncated[seq],
        format_failed=batch.format_failed[seq],
        rewards=None if batch.rewards is None else batch.rewards[g],
        advantages=None if batch.advantages is None else batch.advantages[seq],
        predictions=[batch.predictions[i] for i in seq_list],
        rows=[batch.rows[i] for i in g.tolist()],
        details={k: v[g] for k, v in batch.details.items()},
    )


def _pad_cat(tensors: Sequence[torch.Tensor], value, left: bool) -> torch.Tensor:
    """Concatenate (n_i, W_i) tensors along rows, padding every width to the largest (left or right)."""
    W = max(t.shape[1] for t in tensors)
    padded = []
    for t in tensors:
        pad = (W - t.shape[1], 0) if left else (0, W - t.shape[1])
        padded.append(torch.nn.functional.pad(t, pad, value=value))
    return torch.cat(padded, dim=0)


def concat_rollouts(batches: Sequence[RolloutBatch], pad_id: int = 0) -> RolloutBatch:
    """One batch from several (prompts re-left-padded, completions re-right-padded to common widths)."""
    if len(batches) == 1:
        return batches[0]
    return RolloutBatch(
        prompt_ids=_pad_cat([b.prompt_ids for b in batches], pad_id, left=True),
        prompt_mask=_pad_cat([b.prompt_mask for b in batches], False, left=True),
        completion_ids=_pad_cat([b.completion_ids for b in batches], pad_id, left=False),
        completion_mask=_pad_cat([b.completion_mask for b in batches], False, left=False),
        gen_logprobs=_pad_cat([b.gen_logprobs for b in batches], 0.0, left=False),
        truncated=torch.cat([b.truncated for b in batches]),
        format_failed=torch.cat([b.format_failed for b in batches]),
        predictions=[p for b in batches for p in b.predictions],
        rows=[r for b in batches for r in b.rows],
        group_size=batches[0].group_size,
        rewards=_cat_scored([b.rewards for b in batches]),
        advantages=_cat_scored([b.advantages for b in batches]),
        seconds={k: sum(b.seconds.get(k, 0.0) for b in batches) for k in batches[0].seconds},
        details={k: torch.cat([b.details[k] for b in batches]) for k in batches[0].details},
        score_tokens=sum(b.score_tokens for b in batches),
    )


def _cat_scored(parts: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    """Concatenated rewards or advantages; None unless every part was scored."""
    return None if any(p is None for p in parts) else torch.cat(parts)  # type: ignore[arg-type]


def informative_groups(batch: RolloutBatch) -> list[int]:
    """Indices of groups whose rewards are not all equal (the only ones with a GRPO gradient)."""
    r = batch.rewards  # (n, G)
    return (r != r[:, :1]).any(dim=1).nonzero().flatten().tolist()


@dataclass
class DynamicSampling:
    """DAPO dynamic sampling's bookkeeping, without the sampling: the step rolls out its contexts,
    ``add``s the scored batch, and while ``wants_more()`` draws ``batch_size`` more contexts and adds
    those (at most ``max_resample_batches`` extra draws, each counted in ``extra_draws``)::

        sampler.add(roll(rows))
        while sampler.wants_more() and (more := next_rows(batch_size)):
            sampler.add(roll(more))

    ``result()`` is (training batch of at most ``batch_size`` groups with unequal rewards, everything
    drawn). With no informative group at all the first batch is trained on as is (zero advantages).
    """

    batch_size: int
    max_resample_batches: int
    pad_id: int = 0
    drawn: list[RolloutBatch] = field(default_factory=list)
    kept: list[RolloutBatch] = field(default_factory=list)  # each draw's informative groups

    @property
    def extra_draws(self) -> int:
        return max(len(self.drawn) - 1, 0)

    def add(self, batch: RolloutBatch) -> None:
        self.drawn.append(batch)
        self.kept.append(select_groups(batch, informative_groups(batch)))

    def wants_more(self) -> bool:
        found = sum(k.num_groups for k in self.kept)
        return found < self.batch_size and self.extra_draws < self.max_resample_batches

    def result(self) -> tuple[RolloutBatch, RolloutBatch]:
        drawn = concat_rollouts(self.drawn, self.pad_id)
        kept = [k for k in self.kept if k.num_groups]
        if not kept:
            return self.drawn[0], drawn
        batch = concat_rollouts(kept, self.pad_id)
        return select_groups(batch, range(min(self.batch_size, batch.num_groups))), drawn


# ---------------------------------------------------------------------------------------------- samples


def sample_records(batch: RolloutBatch, tokenizer: Tokenizer, n: int) -> list[dict]:
    """The first completion of each of the first ``n`` groups, with its context, label and rewards."""
    G, out = batch.group_size, []
    for g in range(min(n, batch.num_groups)):
        i, row = g * G, batch.rows[g]
        ids = batch.completion_ids[i][batch.completion_mask[i]].tolist()
        out.append(
            {
                "doc_id": row.get("doc_id"),
                "prompt": row["context"],
                "label": bytes(row["label"]),
                "completion": tokenizer.decode(ids),
                "prediction": batch.predictions[i],
                "reward": float(batch.rewards[g, 0]),
                "group_rewards": batch.rewards[g].tolist(),
            }
        )
    return out
