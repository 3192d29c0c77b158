"""The update half of a training step: log-probs of rollout batches, micro-batched, and the accumulated
gradient of an objective's loss.

``batched_logprobs`` (no grad: old / reference log-probs) and ``backward_micro_batches`` (the gradient)
run a ``LogprobModule`` (``rpt_core.model.logprobs``) over a rollout batch in micro-batches trimmed of
padding. Micro-batch losses are weighted by their share of the *global* normaliser of the objective's
loss aggregation (tokens or sequences, summed over micro-batches and ranks), so accumulation and DDP give
exactly the gradient of the whole batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from rpt_core.runtime.distributed import no_sync
from rpt_train.rl.rollout import RolloutBatch

if TYPE_CHECKING:
    from rpt_train.rl.objective import Objective


def trim_padding(
    input_ids: torch.Tensor,  # (B, P + T)
    attention_mask: torch.Tensor,  # (B, P + T)
    completion_start: int,
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Drop leading columns that are padding in every row and trailing completion columns likewise.

    Neither changes any real token's output (positions count real tokens only; attention is causal), so
    a micro-batch of short sequences costs what its longest member costs. Returns (ids, mask, new
    completion_start, kept): the result's completion columns are the first ``kept`` original ones.
    """
    real = attention_mask.bool().any(dim=0)  # (P + T,)
    prompt_real = real[:completion_start].nonzero()
    first = int(prompt_real[0]) if len(prompt_real) else completion_start - 1
    first = min(first, completion_start - 1)  # keep >= 1 prompt column: it predicts the first token
    comp_real = real[completion_start:].nonzero()
    kept = int(comp_real[-1]) + 1 if len(comp_real) else 1  # >= 1 column keeps shapes non-empty
    kept = min(kept, input_ids.shape[1] - completion_start)
    end = completion_start + kept
    return input_ids[:, first:end], attention_mask[:, first:end], completion_start - first, kept


@dataclass
class MicroBatchSettings:
    """The objective, the sampling temperature (log-probs are taken at it) and sequences per forward."""

    objective: Objective
    temperature: float = 1.0
    micro_batch_size: int = 8


def backward_micro_batches(
    policy, batch: RolloutBatch, loss_mask, old_logp, ref_logp, s: MicroBatchSettings, n_micro: int,
    global_denom: float, world_size: int = 1, autocast=contextlib.nullcontext, sync_module=None,
) -> dict[str, float]:  # fmt: skip
    """Accumulate the gradient of the batch's objective loss; return token-weighted metric sums (this rank).

    loss_mask, old_logp, ref_logp: (S, T) (old None = on-policy: ratio 1 against logp.detach()). The
    returned "loss" is this rank's share of the global objective times ``world_size``. Gradient
    reduction is deferred to the last micro-batch via ``no_sync(sync_module or policy)``. Metrics stay on
    the device until the end: one host transfer per call, not one per micro-batch and metric.
    """
    ids, attn, P = batch.sequences()  # (S, P+T)
    S, mbs = ids.shape[0], s.micro_batch_size
    denom = s.objective.loss_agg.normaliser
    names = ("loss", "tokens", "clip_frac", "kl", "ppo_kl", "entropy", "entropy_tokens")
    sums: dict[str, torch.Tensor | float] = dict.fromkeys(names, 0.0)
    for k in range(n_micro):
        dummy = k * mbs >= S  # padding micro-batch so all ranks call backward equally often
        sl = slice(0, 1) if dummy else slice(k * mbs, (k + 1) * mbs)
        sync = contextlib.nullcontext() if k == n_micro - 1 else no_sync(sync_module or policy)
        with sync:
            m_ids, m_attn, m_P, kept = trim_padding(ids[sl], attn[sl], P)
            with autocast():
                logp, entropy = policy(m_ids, m_attn, m_P, s.temperature)  # (m, kept) each
            mask = loss_mask[sl, :kept]  # (m, kept)
            old = logp.detach() if old_logp is None else old_logp[sl, :kept]
            ref = None if ref_logp is None else ref_logp[sl, :kept]
            loss, m = s.objective.loss(logp, old, batch.advantages[sl], mask, ref_logp=ref)
            weight = 0.0 if dummy else denom(mask).float() * (world_size / max(global_denom, 1.0))  # ()
            (loss * weight).backward()
        if dummy:
            continue
        n_tok = mask.sum().float()
        gen_mask = batch.completion_mask[sl, :kept]  # entropy over every generated token
        sums["loss"] += m["loss"] * weight
        sums["tokens"] += n_tok
        for key in ("clip_frac", "kl", "ppo_kl"):
            sums[key] += m.get(key, 0.0) * n_tok
        sums["entropy"] += torch.where(gen_mask, entropy, 0.0).sum()
        sums["entropy_tokens"] += gen_mask.sum().float()
    values = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=ids.device) for v in sums.values()])
    return dict(zip(names, values.tolist(), strict=True))  # the one host transfer


@torch.no_grad()
def batched_logprobs(module, batch: RolloutBatch, temperature: float, micro_batch_size: int, autocast):
    """log-probs (S, T) float32 of every completion token under ``module`` (a LogprobModule), no grad."""
    ids, attn, P = batch.sequences()
    out = torch.zeros(batch.completion_ids.shape, dtype=torch.float32, device=ids.device)  # (S, T)
    for lo in range(0, ids.shape[0], micro_batch_size):
        sl = slice(lo, lo + micro_batch_size)
        m_ids, m_attn, m_P, kept = trim_padding(ids[sl], attn[sl], P)
        with autocast():
            out[sl, :kept] = module(m_ids, m_attn, m_P, temperature)[0].float()
    return out
