"""GRPO math for the RPT trainer: advantages, the clipped surrogate, the k3 KL and loss aggregation.

Pure torch functions on small tensors so each can be checked by hand; the trainer owns generation, the
model forward and the optimiser. Shapes use N = number of groups (contexts), G = completions per group,
B = N * G sequences in a batch, T = padded completion length. ``mask`` is 1.0 on completion tokens that
count (not prompt, not padding) and 0.0 elsewhere.

Variants are functions selected from small registries:

- ``ADVANTAGES``: ``group`` (GRPO z-score within the group), ``anchor`` (z-score with a 0 reward appended
  to each group, so an all-correct group still gets a positive push), ``mean`` (Dr. GRPO: no std division),
  ``leave-one-out`` (each reward against the mean of the others: RLP's form);
- ``LOSS_AGG``: verl's ``token-mean``, ``seq-mean-token-mean`` and ``seq-mean-token-sum-norm`` (Dr. GRPO),
  each a ``LossAgg`` holding its reduction and its normaliser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rpt_core.runtime.errors import RptError

# exp() of a log-ratio beyond this is inf in float32 or meaningless anyway; clamping keeps the loss finite.
LOG_RATIO_CLAMP = 20.0
DEFAULT_EPS = 1e-6

# ----------------------------------------------------------------------------------------------- advantages


def _all_equal(rewards: torch.Tensor) -> torch.Tensor:
    # rewards: (N, G) -> (N, 1) bool; exact comparison, because a float mean of equal values can round.
    return (rewards == rewards[:, :1]).all(dim=1, keepdim=True)


def group_advantages(rewards: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """(r - mean) / (std + eps) within each group; sample std (n - 1), as verl and TRL use.

    rewards: (N, G) -> (N, G). A group whose rewards are all equal (including G = 1) carries no signal
    and gets exactly 0.
    """
    _check_rewards(rewards)
    rewards = rewards.float()  # (N, G)
    mean = rewards.mean(dim=1, keepdim=True)  # (N, 1)
    if rewards.shape[1] > 1:
        std = rewards.std(dim=1, keepdim=True, correction=1)  # (N, 1)
    else:
        std = torch.zeros_like(mean)  # (N, 1): one completion has no spread
    adv = (rewards - mean) / (std + eps)  # (N, G)
    return torch.where(_all_equal(rewards), torch.zeros_like(adv), adv)


def anchor_advantages(rewards: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Z-score against the group plus one extra 0 reward (the anchor), which itself gets no advantage.

    rewards: (N, G) -> (N, G). Mean and sample std (n - 1) are taken over the G + 1 values. With the
    anchor, a group that is all correct (e.g. [2, 2] -> [+0.577, +0.577]) still gets a positive
    advantage instead of none, while an all-zero group stays at exactly 0.
    """
    _check_rewards(rewards)
    rewards = rewards.float()  # (N, G)
    anchored = torch.cat([rewards, torch.zeros_like(rewards[:, :1])], dim=1)  # (N, G + 1)
    mean = anchored.mean(dim=1, keepdim=True)  # (N, 1)
    std = anchored.std(dim=1, keepdim=True, correction=1)  # (N, 1); G + 1 >= 2 so always defined
    adv = (rewards - mean) / (std + eps)  # (N, G)
    return torch.where(_all_equal(anchored), torch.zeros_like(adv), adv)


def mean_advantages(rewards: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Dr. GRPO: r - group mean, no std division (``eps`` is accepted for a uniform signature, unused).

    rewards: (N, G) -> (N, G).
    """
    del eps
    _check_rewards(rewards)
    rewards = rewards.float()  # (N, G)
    adv = rewards - rewards.mean(dim=1, keepdim=True)  # (N, G)
    return torch.where(_all_equal(rewards), torch.zeros_like(adv), adv)


def leave_one_out_advantages(rewards: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """r_i minus the mean of the group's other rewards = G/(G-1) (r_i - group mean); no std division.

    rewards: (N, G) -> (N, G) (RLP's advantage, arXiv 2510.01265). ``eps`` is unused (uniform signature).
    G = 1 has no other reward to compare with and, like an all-equal group, gets exactly 0.
    """
    del eps
    _check_rewards(rewards)
    rewards = rewards.float()  # (N, G)
    G = rewards.shape[1]
    if G == 1:
        return torch.zeros_like(rewards)
    adv = G / (G - 1) * (rewards - rewards.mean(dim=1, keepdim=True))  # (N, G)
    return torch.where(_all_equal(rewards), torch.zeros_like(adv), adv)


AdvantageFn = Callable[[torch.Tensor, float], torch.Tensor]
ADVANTAGES: dict[str, AdvantageFn] = {
    "group": group_advantages,
    "anchor": anchor_advantages,
    "mean": mean_advantages,
    "leave-one-out": leave_one_out_advantages,
}


def compute_advantages(rewards: torch.Tensor, kind: str = "group", eps: float = DEFAULT_EPS) -> torch.Tensor:
    """rewards: (N, G) -> advantages (N, G) with the estimator registered as ``kind``."""
    return _lookup(ADVANTAGES, kind, "advantage estimator")(rewards, eps)


def silent_with_one_completion(kind: str) -> bool:
    """True when estimator ``kind`` gives every advantage exactly 0 for groups of one completion (G = 1),
    whatever the rewards: training with it would change nothing. Asked of the estimator itself (on
    rewards -1, 0, 0.5, 1), so a new registry entry is covered too."""
    rewards = torch.tensor([[-1.0], [0.0], [0.5], [1.0]])  # (N, 1)
    return bool((compute_advantages(rewards, kind) == 0).all())


def frac_zero_std(rewards: torch.Tensor) -> float:
    """Fraction of groups whose rewards are all equal (they give no GRPO gradient). rewards: (N, G)."""
    _check_rewards(rewards)
    if rewards.shape[0] == 0:
        return 0.0
    return _all_equal(rewards).float().mean().item()


def _check_rewards(rewards: torch.Tensor) -> None:
    if rewards.dim() != 2 or rewards.shape[1] < 1:
        raise ValueError(f"rewards must have shape (num_groups, G >= 1), got {tuple(rewards.shape)}")


# ------------------------------------------------------------------------------------ surrogate and KL


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon: float,
    epsilon_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate per token, with DAPO's asymmetric clip range [1 - eps, 1 + eps_high].

    logp, old_logp, mask: (B, T); advantages: (B,) per sequence (broadcast over tokens) or (B, T).
    Returns (per_token_loss (B, T), clipped_fraction scalar tensor). The loss is
    max(-A * ratio, -A * clip(ratio)); where the clipped term wins, the gradient wrt ``logp`` is 0, and
    ``clipped_fraction`` (no gradient) is the fraction of mask tokens where that happens.
    ``per_token_loss`` is not masked: aggregation applies the mask.
    """
    eps_high = epsilon if epsilon_high is None else epsilon_high
    _check_same_shape(logp, old_logp=old_logp, mask=mask)
    adv = _token_advantages(advantages, logp)  # (B, T)
    log_ratio = (logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    unclipped = -adv * ratio  # (B, T)
    clipped = -adv * ratio.clamp(1.0 - epsilon, 1.0 + eps_high)  # (B, T)
    per_token_loss = torch.maximum(unclipped, clipped)  # (B, T)
    with torch.no_grad():
        active = (clipped > unclipped).to(mask.dtype)  # (B, T)
        clipped_fraction = masked_mean(active, mask)  # ()
    return per_token_loss, clipped_fraction


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(policy || ref): exp(r) - r - 1 with r = ref_logp - logp (>= 0).

    logp, ref_logp: (B, T) -> (B, T). Zero where the two agree, positive elsewhere; unbiased for the KL
    under samples from the policy and lower-variance than log-ratio (k1).
    """
    _check_same_shape(logp, ref_logp=ref_logp)
    r = (ref_logp - logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # (B, T)
    return torch.exp(r) - r - 1.0  # (B, T)


# ------------------------------------------------------------------------------------ loss aggregation


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over mask tokens; 0 (still in the graph) when the mask is empty. (B, T) -> ()."""
    return _masked_zero(values, mask).sum() / mask.sum().clamp(min=1.0)


def _masked_zero(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # where, not multiply: padding may hold inf/nan (e.g. log-probs of pad tokens) and nan * 0 is nan.
    return torch.where(mask > 0, values, torch.zeros_like(values))  # (B, T)


def token_mean(per_token_loss: torch.Tensor, mask: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Sum over all mask tokens / number of mask tokens: every token weighs the same (DAPO)."""
    del max_len
    return masked_mean(per_token_loss, mask)


def seq_mean_token_mean(
    per_token_loss: torch.Tensor, mask: torch.Tensor, max_len: int | None = None
) -> torch.Tensor:
    """Mean over sequences of each sequence's token mean (original GRPO); empty sequences are skipped."""
    del max_len
    tokens = mask.sum(dim=1)  # (B,)
    seq_loss = _masked_zero(per_token_loss, mask).sum(dim=1) / tokens.clamp(min=1.0)  # (B,)
    return _mean_over_nonempty(seq_loss, tokens)


def seq_mean_token_sum_norm(
    per_token_loss: torch.Tensor, mask: torch.Tensor, max_len: int | None = None
) -> torch.Tensor:
    """Dr. GRPO: each sequence's token sum / a constant, then the mean over (non-empty) sequences.

    The constant is ``max_len`` (the maximum response length, fixed for the run, so the loss scale does
    not depend on how long this batch's completions happen to be); as in verl it defaults to the padded
    width T when not given.
    """
    norm = per_token_loss.shape[1] if max_len is None else max_len
    if norm <= 0:
        raise ValueError(f"seq-mean-token-sum-norm needs max_len > 0, got {norm}")
    tokens = mask.sum(dim=1)  # (B,)
    seq_loss = _masked_zero(per_token_loss, mask).sum(dim=1) / float(norm)  # (B,)
    return _mean_over_nonempty(seq_loss, tokens)


def _mean_over_nonempty(seq_loss: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    # seq_loss, tokens: (B,) -> (); a sequence with no mask tokens (verl does the same) must not dilute it.
    nonempty = (tokens > 0).to(seq_loss.dtype)  # (B,)
    return (seq_loss * nonempty).sum() / nonempty.sum().clamp(min=1.0)


def token_count(mask: torch.Tensor) -> torch.Tensor:
    """What token-mean divides by: loss tokens. mask (B, T) -> ()."""
    return mask.sum()


def sequence_count(mask: torch.Tensor) -> torch.Tensor:
    """What the seq-mean aggregations divide by: sequences with at least one loss token. (B, T) -> ()."""
    return (mask.sum(-1) > 0).sum()


@dataclass(frozen=True)
class LossAgg:
    """A loss aggregation: its reduction and the normaliser that reduction divides by, in one object.

    ``reduce(per_token_loss, mask, max_len) -> ()``; ``normaliser(mask) -> ()`` counts what ``reduce``
    averages over (tokens or non-empty sequences). Weighting each micro-batch's reduced loss by its share
    of the summed normaliser makes gradient accumulation and data parallelism give exactly the gradient
    of the whole batch (``rpt_train.rl.update``).
    """

    name: str
    reduce: Callable[[torch.Tensor, torch.Tensor, int | None], torch.Tensor]
    normaliser: Callable[[torch.Tensor], torch.Tensor]


LOSS_AGG: dict[str, LossAgg] = {
    a.name: a
    for a in (
        LossAgg("token-mean", token_mean, token_count),
        LossAgg("seq-mean-token-mean", seq_mean_token_mean, sequence_count),
        LossAgg("seq-mean-token-sum-norm", seq_mean_token_sum_norm, sequence_count),
    )
}


def get_loss_agg(name: str) -> LossAgg:
    return _lookup(LOSS_AGG, name, "loss aggregation")


def aggregate_loss(
    per_token_loss: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean", max_len: int | None = None
) -> torch.Tensor:
    """per_token_loss, mask: (B, T) -> scalar, with the aggregation registered as ``mode``."""
    _check_same_shape(per_token_loss, mask=mask)
    return get_loss_agg(mode).reduce(per_token_loss, mask.to(per_token_loss.dtype), max_len)


# ------------------------------------------------------------------------------------ the GRPO loss


@dataclass(frozen=True)
class GrpoLossConfig:
    """Surrogate and aggregation settings of ``grpo_loss``.

    epsilon / epsilon_high: lower / upper clip range (ratio in [1 - epsilon, 1 + epsilon_high]; None ->
    symmetric). loss_agg: a ``LOSS_AGG`` name. max_len: the constant of ``seq-mean-token-sum-norm``
    (the run's maximum completion length).
    """

    epsilon: float = 0.2
    epsilon_high: float | None = None
    loss_agg: str = "token-mean"
    max_len: int | None = None

    def __post_init__(self) -> None:
        if self.loss_agg not in LOSS_AGG:
            raise RptError(f"unknown loss_agg {self.loss_agg!r}; valid: {', '.join(sorted(LOSS_AGG))}")
        if not 0.0 < self.epsilon < 1.0:
            raise RptError(f"epsilon must be in (0, 1), got {self.epsilon}")
        if self.epsilon_high is not None and self.epsilon_high <= 0.0:
            raise RptError(f"epsilon_high must be > 0, got {self.epsilon_high}")
        if self.max_len is not None and self.max_len <= 0:
            raise RptError(f"max_len must be > 0, got {self.max_len}")


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: GrpoLossConfig | None = None,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The GRPO objective to minimise: aggregate(surrogate + beta * k3 KL), plus metrics.

    logp (with grad), old_logp, ref_logp, mask: (B, T); advantages: (B,) per sequence. With beta > 0 the
    KL to the reference is added per token before aggregation (as in TRL), so it shares the surrogate's
    token weighting. Metrics are detached 0-d tensors on logp's device (the caller converts them once per
    step: no host sync per micro-batch): loss, pg_loss, clip_frac, ratio_mean, ppo_kl (masked mean of
    old_logp - logp) and, when a reference is given, kl.
    """
    cfg = cfg or GrpoLossConfig()
    if beta != 0.0 and ref_logp is None:
        raise ValueError("grpo_loss: beta != 0 needs ref_logp")
    mask = mask.to(logp.dtype)  # (B, T)
    pg_tokens, clip_frac = clipped_surrogate(
        logp, old_logp, advantages, mask, cfg.epsilon, cfg.epsilon_high
    )  # (B, T), ()
    per_token = pg_tokens  # (B, T)
    metrics: dict[str, torch.Tensor] = {}
    if ref_logp is not None:
        kl_tokens = k3_kl(logp, ref_logp)  # (B, T)
        metrics["kl"] = masked_mean(kl_tokens.detach(), mask)
        if beta != 0.0:
            per_token = per_token + beta * kl_tokens  # (B, T)
    loss = aggregate_loss(per_token, mask, cfg.loss_agg, cfg.max_len)  # ()
    with torch.no_grad():
        log_ratio = (logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # (B, T)
        pg_loss = aggregate_loss(pg_tokens.detach(), mask, cfg.loss_agg, cfg.max_len)  # ()
        metrics.update(
            loss=loss.detach(),
            pg_loss=pg_loss,
            clip_frac=clip_frac,
            ratio_mean=masked_mean(torch.exp(log_ratio), mask),
            ppo_kl=masked_mean(-log_ratio, mask),
        )
    return loss, metrics


# ------------------------------------------------------------------------------------ helpers


def _token_advantages(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # advantages: (B,) or (B, T) -> (B, T) in like's dtype; advantages are constants, never differentiated.
    adv = advantages.detach().to(like.dtype)
    if adv.dim() == 1:
        adv = adv.unsqueeze(1)  # (B, 1)
    if adv.shape[0] != like.shape[0] or adv.dim() != 2 or adv.shape[1] not in (1, like.shape[1]):
        raise ValueError(f"advantages of shape {tuple(advantages.shape)} do not fit logp {tuple(like.shape)}")
    return adv.expand_as(like)  # (B, T)


def _check_same_shape(ref: torch.Tensor, **others: torch.Tensor) -> None:
    if ref.dim() != 2:
        raise ValueError(f"expected a (B, T) tensor, got shape {tuple(ref.shape)}")
    for name, t in others.items():
        if t.shape != ref.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(ref.shape)}")


def _lookup(registry: dict, name: str, what: str):
    try:
        return registry[name]
    except KeyError:
        raise RptError(f"unknown {what} {name!r}; valid: {', '.join(sorted(registry))}") from None
