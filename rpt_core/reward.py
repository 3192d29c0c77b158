"""RPT rewards: score an extracted prediction against the ground-truth continuation, on bytes.

A shard row carries ``label`` (the UTF-8 bytes of the next L ground-truth tokens) and ``boundaries`` (the
cumulative byte lengths of those tokens, i.e. the prefix lengths of ``label`` that end on a token
boundary). Comparing bytes rather than token ids lets the policy predict any text at all while the reward
still respects the tokenizer: a prediction counts only when it reproduces whole ground-truth tokens.

Nothing here strips or normalises the prediction: a leading or trailing space is part of the answer
(" Paris" and "Paris" are different continuations).

Variants are plain functions selected from ``REWARDS``:

- ``prefix`` (the RPT paper's main reward): 1 when the prediction is a byte-prefix of the label that ends
  on one of the token boundaries;
- ``first-token`` (the paper's Appendix A variant): 1 only when the prediction is exactly the first
  ground-truth token.

Only ``score_rows`` needs torch, and it imports it itself, so the registry and ``compute_rewards`` load
without it (``rpt-data export`` reads ``REWARDS`` for its options).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rpt_core.runtime.errors import RptError

if TYPE_CHECKING:
    import torch

RewardFn = Callable[[str | None, bytes, Sequence[int]], float]


def prediction_bytes(prediction: str) -> bytes:
    """UTF-8 bytes of a prediction; a lone surrogate is kept (it never matches a valid label), not raised."""
    return prediction.encode("utf-8", errors="surrogatepass")


def prefix_reward(prediction: str | None, label: bytes, boundaries: Sequence[int]) -> float:
    """1.0 when ``prediction``'s bytes are a prefix of ``label`` ending on a token boundary, else 0.0.

    ``boundaries`` lists the valid prefix lengths in bytes (cumulative token byte lengths). An empty or
    missing prediction scores 0: predicting nothing is never a correct continuation.
    """
    if not prediction:
        return 0.0
    pred = prediction_bytes(prediction)
    if len(pred) not in boundaries:
        return 0.0
    return 1.0 if label.startswith(pred) else 0.0


def first_token_bytes(label: bytes, boundaries: Sequence[int]) -> bytes:
    """The bytes of the first ground-truth token of a shard row's label."""
    return bytes(label)[: boundaries[0]] if len(boundaries) else b""


def first_token_reward(prediction: str | None, label: bytes, boundaries: Sequence[int]) -> float:
    """1.0 when ``prediction``'s bytes equal the first ground-truth token, ``label[:boundaries[0]]``."""
    if not prediction or len(boundaries) == 0:
        return 0.0
    return 1.0 if prediction_bytes(prediction) == first_token_bytes(label, boundaries) else 0.0


REWARDS: dict[str, RewardFn] = {
    "prefix": prefix_reward,
    "first-token": first_token_reward,
}


def get_reward_fn(kind: str) -> RewardFn:
    """The reward function registered as ``kind``; an unknown name is a user error listing valid names."""
    try:
        return REWARDS[kind]
    except KeyError:
        raise RptError(f"unknown reward {kind!r}; valid rewards: {', '.join(sorted(REWARDS))}") from None


def compute_rewards(
    predictions: Sequence[str | None],
    labels: Sequence[bytes],
    boundaries: Sequence[Sequence[int]],
    kind: str = "prefix",
    format_penalty: float = 0.0,
) -> list[float]:
    """Reward each completion; one entry per prediction, in order.

    A ``None`` prediction means nothing could be extracted (no ``</think>``, no box, a truncated
    completion): it gets ``format_penalty`` (e.g. -1.0 to push the policy toward the answer format)
    instead of a correctness reward. An extracted but wrong or empty prediction gets the reward's 0.
    """
    if not (len(predictions) == len(labels) == len(boundaries)):
        raise ValueError(
            f"compute_rewards: {len(predictions)} predictions, {len(labels)} labels, "
            f"{len(boundaries)} boundary lists; they must match one-to-one"
        )
    fn = get_reward_fn(kind)
    return [
        float(format_penalty) if pred is None else fn(pred, bytes(label), bnds)
        for pred, label, bnds in zip(predictions, labels, boundaries, strict=True)
    ]


def score_rows(
    predictions: Sequence[str | None],
    rows: Sequence[Mapping[str, Any]],
    group_size: int,
    kind: str = "prefix",
    format_penalty: float = 0.0,
) -> torch.Tensor:
    """Rewards (n, G) float32 of ``n * G`` predictions, prompt-major, against each shard row's label.

    The one reward path: the RPT objective (training and validation) and the evaluator's reasoning
    mode call this, so they can never disagree on what earns a reward (verl's ``compute_score`` in
    ``rpt_train.verl_reward`` calls ``compute_rewards`` below it, one completion at a time).
    """
    import torch  # here, not at the top: verl's reward workers and rpt-data import this module without it

    labels = [bytes(r["label"]) for r in rows for _ in range(group_size)]
    bounds = [list(r["boundaries"]) for r in rows for _ in range(group_size)]
    rewards = compute_rewards(predictions, labels, bounds, kind, format_penalty)
    return torch.tensor(rewards, dtype=torch.float32).view(len(rows), group_size)  # (n, G)
