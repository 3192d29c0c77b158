"""The numbers a training step and a validation pass log (``metrics.jsonl``), named here and nowhere else.

Beside these, an objective adds its own (``Objective.metrics``: RPT's ``acc``, RLP's ``info_gain_*``...)
and the logger adds ``step``. One step logs, in this order:

- about everything drawn this step (dynamic sampling may draw more than it trains on), from
  ``rollout_metrics``: ``reward``, ``reward_std``, ``format_fail``, ``truncated``, ``frac_zero_std``,
  ``completion_len_mean`` / ``_max``, then the objective's;
- ``flops`` (this step's training compute, ``rpt_train.compute``), ``tokens_per_s``, ``time_generate``,
  ``time_score`` (scoring and old / reference log-probs), ``time_update``; with dynamic sampling
  ``groups`` (trained on) and ``resample_batches`` (extra draws); ``skipped_rows`` (empty contexts so far);
  all of them means over ranks, except the sums ``SUMMED_OVER_RANKS``; then ``train_flops`` (the run's);
- from the last optimizer update (``update_metrics``): ``loss``, ``grad_norm``, ``lr``, ``clip_frac``,
  ``ratio_mean`` (the mean new / old probability ratio over loss tokens: 1 on-policy), ``ppo_kl``,
  ``entropy``, ``kl`` and ``pg_loss`` (the surrogate without the KL term; with a reference only, else it is
  ``loss``), and ``skipped`` (non-finite, not applied) or ``update_ratio``.

Validation (``validation_metrics``) logs ``val_reward``, ``val_format_fail`` and ``val_`` + each of the
objective's metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from rpt_core.runtime import distributed as D
from rpt_train.compute import rl_step_flops
from rpt_train.rl.grpo import frac_zero_std

if TYPE_CHECKING:
    from rpt_train.rl.objective import Objective
    from rpt_train.rl.rollout import RolloutBatch

SUMMED_OVER_RANKS = ("tokens_per_s", "groups", "skipped_rows", "flops")  # every other key: a mean


def rollout_metrics(batch: RolloutBatch) -> dict[str, float]:
    """Reward / format / length statistics of a scored batch (means over sequences)."""
    r = batch.rewards.float()  # (n, G)
    lengths = batch.completion_mask.sum(-1).float()  # (n*G,)
    return {
        "reward": r.mean().item(),
        "reward_std": r.std(unbiased=False).item(),
        "format_fail": batch.format_failed.float().mean().item(),
        "truncated": batch.truncated.float().mean().item(),
        "frac_zero_std": frac_zero_std(r),
        "completion_len_mean": lengths.mean().item(),
        "completion_len_max": lengths.max().item(),
    }


def step_metrics(
    drawn: RolloutBatch,
    batch: RolloutBatch,
    objective: Objective,
    *,
    n_params: int,
    iterations: int,
    has_ref: bool,
    seconds: tuple[float, float],  # (scoring and log-probs done, update done), since the step's start
    extra_draws: int | None,  # None: no dynamic sampling
    skipped_rows: int,
    world: int,
) -> dict[str, float]:
    """Everything but the update's numbers, over every rank (a collective): see the module docstring.

    ``drawn``: everything rolled out this step; ``batch``: what was trained on (its subset).
    """
    m = {**rollout_metrics(drawn), **objective.metrics(drawn)}
    G = batch.group_size
    m["flops"] = rl_step_flops(
        n_params,
        rollout_tokens=int(drawn.prompt_mask.sum()) + int(drawn.completion_mask.sum()),
        update_tokens=G * int(batch.prompt_mask.sum()) + int(batch.completion_mask.sum()),
        updates=iterations,
        extra_forwards=int(iterations > 1) + int(has_ref),  # the old and the reference log-probs
        score_tokens=drawn.score_tokens,
    )
    scored, updated = seconds
    gen_s = drawn.seconds.get("generate", 0.0)
    m.update(
        tokens_per_s=float(drawn.completion_mask.sum()) / max(updated, 1e-9),
        time_generate=gen_s,
        time_score=scored - gen_s,
        time_update=updated - scored,
    )
    if extra_draws is not None:
        m.update(groups=batch.num_groups, resample_batches=extra_draws)
    m["skipped_rows"] = skipped_rows  # empty contexts so far (this run, all ranks)
    m = D.mean_over_ranks(m)
    m.update({k: m[k] * world for k in SUMMED_OVER_RANKS if k in m})
    return m


def update_metrics(sums: dict[str, float], world: int, grad_norm: float, lr: float, has_ref: bool) -> dict:
    """One optimizer update's numbers from ``rpt_train.rl.update.SUMS`` summed over ranks: ``loss`` (each
    rank's share is the global loss times ``world``), and per-loss-token means of the objective's."""
    out = {"loss": sums["loss"] / world, "grad_norm": grad_norm, "lr": lr}
    tokens = max(sums["tokens"], 1.0)
    out.update({k: sums[k] / tokens for k in ("clip_frac", "ratio_mean", "ppo_kl")})
    out["entropy"] = sums["entropy"] / max(sums["entropy_tokens"], 1.0)  # over every generated token
    if has_ref:
        out.update(kl=sums["kl"] / tokens, pg_loss=sums["pg_loss"] / world)
    return out


def validation_metrics(batches: list[RolloutBatch], objective: Objective) -> dict[str, float]:
    """``val_reward``, ``val_format_fail`` and the objective's metrics, each a mean over every rank's
    completions (a collective; a rank may hold no batch)."""
    per_batch = [(b.num_sequences, objective.metrics(b)) for b in batches]
    names = sorted(set().union(*D.all_gather_objects(sorted(per_batch[0][1]) if per_batch else [])))
    sums = [
        sum(float(b.rewards.double().sum()) for b in batches),
        sum(float(b.format_failed.sum()) for b in batches),
        *(sum(n * m.get(k, 0.0) for n, m in per_batch) for k in names),
        float(sum(n for n, _ in per_batch)),
    ]
    totals = D.all_reduce_sum(torch.tensor(sums, dtype=torch.float64)).tolist()
    n = max(totals[-1], 1.0)
    keys = ("reward", "format_fail", *names)
    return {f"val_{k}": v / n for k, v in zip(keys, totals[:-1], strict=True)}
