"""Training compute, counted the same way for every method so that their costs can be matched.

The usual approximation (Kaplan et al. 2020): a forward pass costs 2·N FLOPs per token and a forward plus
backward 6·N, with N the model's parameters (tied embeddings counted once; the LM head's matmul is real
work, the embedding lookup is not, and at the demo's scale the two roughly cancel). Attention's
sequence-length term is left out, as in the RPT and RLP papers' compute axes.

An RL step spends compute twice: rollouts are forward passes over the prompt (prefilled once per
context) and every generated token; the update is a forward and backward over each trained sequence
(prompt and completion) per optimizer iteration, plus one forward per extra log-prob pass (old policy,
reference), plus any forward passes the objective runs to score the rollouts (RLP: the policy over
context, thought and the scored tokens; its EMA baseline over context and scored tokens). Continued
pretraining spends 6·N per trained token.
"""

from __future__ import annotations

FORWARD, FORWARD_BACKWARD = 2, 6


def pretrain_flops(n_params: int, tokens: int) -> float:
    """Compute of next-token training on ``tokens`` tokens."""
    return float(FORWARD_BACKWARD * n_params * tokens)


def rl_step_flops(
    n_params: int,
    rollout_tokens: int,
    update_tokens: int,
    updates: int = 1,
    extra_forwards: int = 0,
    score_tokens: int = 0,
) -> float:
    """Compute of one RL step.

    rollout_tokens: prompt tokens prefilled plus tokens generated, over everything drawn (dynamic
    sampling draws more than it trains on); update_tokens: real tokens of the trained sequences (each
    sample's prompt and completion); updates: optimizer iterations over them; extra_forwards: no-grad
    log-prob passes over them (old policy, reference model); score_tokens: tokens of the objective's
    own scoring forwards (a model of the policy's size).
    """
    return float(
        FORWARD * n_params * (rollout_tokens + score_tokens)
        + FORWARD_BACKWARD * n_params * update_tokens * updates
        + FORWARD * n_params * update_tokens * extra_forwards
    )
