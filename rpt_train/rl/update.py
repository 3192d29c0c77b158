"""The update half of a training step: log-probs of rollout batches, micro-batched, and the accumulated
gradient of an objective's loss.

``sequence_logprobs`` (no grad) runs a ``LogprobModule`` (``rpt_core.model.logprobs``) over
left-padded prompts + right-padded completions in micro-batches trimmed of padding: the old / reference
log-probs of a rollout batch (``batched_logprobs``) and RLP's scoring forwards
(``rpt_train.rl.objective_rlp``) both go through it. ``backward_micro_batches`` accumulates the gradient.
Micro-batch losses are weighted by their share of the *global* normaliser of the objective's loss
aggregation (tokens or sequences, summed over micro-batches and ranks; ``plan_micro_batches`` sums it
once per step), so accumulation and DDP give exactly the gradient of the whole batch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from rpt_core.runtime import distributed as D
from rpt_train.rl.rollout import RolloutBatch

if TYPE_CHECKING:
    from rpt_train.rl.objective import Objective

# What ``backward_micro_batches`` sums over micro-batches (this rank), in this order; the trainer turns
# them into the logged per-token means (rpt_train.rl.step_metrics.update_metrics).
SUMS = ("loss", "pg_loss", "tokens", "clip_frac", "ratio_mean", "kl", "ppo_kl", "entropy", "entropy_tokens")
# The objective's metrics summed as value * loss tokens (``loss`` and ``pg_loss`` carry the loss weight).
TOKEN_WEIGHTED = ("clip_frac", "ratio_mean", "kl", "ppo_kl")


def trim_padding(
    input_ids: torch.Tensor,  # (B, P + T)
    attention_mask: torch.Tensor,  # (B, P + T)
    completion_start: int,
    trim_completions: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Drop leading columns that are padding in every row and (``trim_completions``) trailing completion
    columns likewise.

    Neither changes any real token's output (positions count real tokens only; attention is causal), so
    a micro-batch of short sequences costs what its longest member costs. Returns (ids, mask, new
    completion_start, kept): the result's completion columns are the first ``kept`` original ones.
    """
    real = attention_mask.bool().any(dim=0)  # (P + T,)
    T = input_ids.shape[1] - completion_start
    prompt_real = real[:completion_start].nonzero()
    first = int(prompt_real[0]) if len(prompt_real) else completion_start - 1
    first = min(first, completion_start - 1)  # keep >= 1 prompt column: it predicts the first token
    comp_real = real[completion_start:].nonzero()
    kept = int(comp_real[-1]) + 1 if len(comp_real) else 1  # >= 1 column keeps shapes non-empty
    kept = min(kept, T) if trim_completions else T
    end = completion_start + kept
    return input_ids[:, first:end], attention_mask[:, first:end], completion_start - first, kept


@dataclass(frozen=True)
class MicroBatchSettings:
    """How a step's forwards run: the objective, the sampling temperature (log-probs are taken at it),
    sequences per forward, and the data-parallel machinery (ranks, the trainer's autocast, and the module
    whose ``no_sync`` defers gradient reduction: None = the policy itself)."""

    objective: Objective
    temperature: float = 1.0
    micro_batch_size: int = 8
    world_size: int = 1
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    sync_module: torch.nn.Module | None = None


@dataclass(frozen=True)
class MicroBatchPlan:
    """One step's micro-batching, the same on every rank: how many micro-batches each rank runs (the
    most any rank needs: the others pad with zero-weight ones so backward runs equally often) and the
    loss normaliser summed over the whole batch on every rank."""

    n_micro: int
    global_denom: float


def plan_micro_batches(batch: RolloutBatch, loss_mask: torch.Tensor, s: MicroBatchSettings) -> MicroBatchPlan:
    """The plan for ``batch`` with ``loss_mask`` (S, T); a collective (two all-reduces)."""
    n_micro = int(D.all_reduce_max(math.ceil(batch.num_sequences / s.micro_batch_size)))
    return MicroBatchPlan(n_micro, D.all_reduce_sum(float(s.objective.loss_agg.normaliser(loss_mask))))


def backward_micro_batches(
    policy,
    batch: RolloutBatch,
    *,
    loss_mask: torch.Tensor,  # (S, T)
    settings: MicroBatchSettings,
    plan: MicroBatchPlan,
    old_logp: torch.Tensor | None = None,  # (S, T); None = on-policy: ratio 1 against logp.detach()
    ref_logp: torch.Tensor | None = None,  # (S, T) when a reference model is loaded
) -> dict[str, float]:
    """Accumulate the gradient of the batch's objective loss; return the ``SUMS`` of this rank.

    The returned "loss" is this rank's share of the global objective times ``world_size``. Gradient
    reduction is deferred to the last micro-batch via ``no_sync(sync_module or policy)``. Metrics stay on
    the device until the end: one host transfer per call, not one per micro-batch and metric.
    """
    s = settings
    ids, attn, P = batch.sequences()  # (S, P+T)
    S, mbs = ids.shape[0], s.micro_batch_size
    denom = s.objective.loss_agg.normaliser
    sums: dict[str, torch.Tensor | float] = dict.fromkeys(SUMS, 0.0)
    for k in range(plan.n_micro):
        dummy = k * mbs >= S  # padding micro-batch so all ranks call backward equally often
        sl = slice(0, 1) if dummy else slice(k * mbs, (k + 1) * mbs)
        sync = contextlib.nullcontext() if k == plan.n_micro - 1 else D.no_sync(s.sync_module or policy)
        with sync:
            m_ids, m_attn, m_P, kept = trim_padding(ids[sl], attn[sl], P)
            with s.autocast():
                logp, entropy = policy(m_ids, m_attn, m_P, s.temperature)  # (m, kept) each
            mask = loss_mask[sl, :kept]  # (m, kept)
            old = logp.detach() if old_logp is None else old_logp[sl, :kept]
            ref = None if ref_logp is None else ref_logp[sl, :kept]
            loss, m = s.objective.loss(logp, old, batch.advantages[sl], mask, ref_logp=ref)
            weight = (
                0.0 if dummy else denom(mask).float() * (s.world_size / max(plan.global_denom, 1.0))
            )  # ()
            (loss * weight).backward()
        if dummy:
            continue
        n_tok = mask.sum().float()
        gen_mask = batch.completion_mask[sl, :kept]  # entropy over every generated token
        sums["loss"] += m["loss"] * weight
        sums["pg_loss"] += m.get("pg_loss", m["loss"]) * weight
        sums["tokens"] += n_tok
        for key in TOKEN_WEIGHTED:
            sums[key] += m.get(key, 0.0) * n_tok
        sums["entropy"] += torch.where(gen_mask, entropy, 0.0).sum()
        sums["entropy_tokens"] += gen_mask.sum().float()
    values = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=ids.device) for v in sums.values()])
    return dict(zip(SUMS, values.tolist(), strict=True))  # the one host transfer


@torch.no_grad()
def sequence_logprobs(
    module,
    input_ids: torch.Tensor,  # (S, P + T): left-padded prompts, then right-padded completions
    attention_mask: torch.Tensor,  # (S, P + T)
    completion_start: int,  # P
    temperature: float,
    micro_batch_size: int,
    autocast=contextlib.nullcontext,
    *,
    trim_completions: bool = True,
) -> torch.Tensor:
    """log-probs (S, T) float32 of every completion token under ``module`` (a LogprobModule), no grad;
    0 past a row's completion. ``trim_completions``: see ``trim_padding``."""
    P = completion_start
    out = torch.zeros(
        input_ids.shape[0], input_ids.shape[1] - P, dtype=torch.float32, device=input_ids.device
    )  # (S, T)
    for lo in range(0, input_ids.shape[0], micro_batch_size):
        sl = slice(lo, lo + micro_batch_size)
        m_ids, m_attn, m_P, kept = trim_padding(input_ids[sl], attention_mask[sl], P, trim_completions)
        with autocast():
            out[sl, :kept] = module(m_ids, m_attn, m_P, temperature)[0].float()
    return out


def batched_logprobs(module, batch: RolloutBatch, temperature: float, micro_batch_size: int, autocast):
    """log-probs (S, T) float32 of every completion token of ``batch`` under ``module``, no grad."""
    ids, attn, P = batch.sequences()  # (S, P + T)
    return sequence_logprobs(module, ids, attn, P, temperature, micro_batch_size, autocast)
