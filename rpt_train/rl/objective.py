"""Objectives: how the trainer turns a batch of rollouts into rewards, advantages and a loss.

The trainer knows nothing of rewards or surrogates. It rolls out, hands the batch to its objective's
``score`` (rewards and advantages), computes log-probs, and asks ``loss`` for the per-micro-batch loss it
differentiates. A second objective is a new file registered in ``OBJECTIVES``, not branches in the
trainer. An objective carries state only if it needs some (``state_dict`` / ``load_state_dict`` are part
of the trainer's checkpoint state).

Registered:
- ``rpt`` (``rpt_train.rl.objective_rpt``): RPT's prefix-match reward -> group advantages -> the GRPO
  clipped surrogate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import torch

from rpt_train.errors import RptError
from rpt_train.rl.grpo import LossAgg
from rpt_train.rl.objective_rpt import RptObjective
from rpt_train.rl.rollout import RolloutBatch

if TYPE_CHECKING:
    from rpt_train.rl.config import TrainConfig


class Objective(Protocol):
    """What the trainer needs from an objective."""

    name: str

    @property
    def loss_agg(self) -> LossAgg:
        """The aggregation ``loss`` reduces with; its normaliser weights micro-batches exactly."""
        ...

    def score(self, batch: RolloutBatch) -> RolloutBatch:
        """The batch with ``rewards`` (n, G) and ``advantages`` (n*G,) filled in."""
        ...

    def loss(
        self,
        logp: torch.Tensor,  # (B, T) with grad
        old_logp: torch.Tensor,  # (B, T)
        advantages: torch.Tensor,  # (B,)
        mask: torch.Tensor,  # (B, T) loss tokens
        ref_logp: torch.Tensor | None = None,  # (B, T) when a reference model is loaded
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """The scalar to minimise for one micro-batch and its metrics (``loss`` among them), as detached
        0-d tensors (or floats): ``rpt_train.rl.update`` reads them back once per step."""
        ...

    def metrics(self, batch: RolloutBatch) -> dict[str, float]:
        """Objective-specific numbers about a scored batch, logged every step."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


OBJECTIVES: dict[str, Callable[[TrainConfig], Objective]] = {
    "rpt": RptObjective.from_config,
}


def build_objective(cfg: TrainConfig) -> Objective:
    """The objective named by ``cfg.objective``, configured from ``cfg``."""
    try:
        factory = OBJECTIVES[cfg.objective]
    except KeyError:
        raise RptError(
            f"unknown objective {cfg.objective!r}; valid: {', '.join(sorted(OBJECTIVES))}"
        ) from None
    return factory(cfg)
