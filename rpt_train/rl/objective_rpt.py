"""RPT's objective (arXiv 2506.08007): prefix-match reward -> group advantages -> GRPO clipped surrogate.

``score`` rewards each extracted prediction against the row's ground-truth bytes with the configured
reward (``rpt_core.reward``, the same code the evaluator and validation use) and turns each group's
rewards into advantages (``rpt_train.rl.grpo``). ``loss`` is ``grpo_loss``: the clipped surrogate, plus
a k3 KL to a frozen reference when ``beta > 0``, aggregated as configured. RPT keeps no state of its own
and needs none of the trainer's hooks: ``ObjectiveHooks`` gives them as no-ops.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from rpt_core.reward import score_rows
from rpt_train.rl.grpo import GrpoLossConfig, LossAgg, compute_advantages, get_loss_agg, grpo_loss
from rpt_train.rl.objective import ObjectiveHooks
from rpt_train.rl.rollout import RolloutBatch

if TYPE_CHECKING:
    from rpt_train.rl.config import TrainConfig


@dataclass(frozen=True)
class RptObjective(ObjectiveHooks):  # scores extracted predictions: needs no model, keeps no state
    reward: str = "prefix"
    format_penalty: float = 0.0
    advantage: str = "group"
    grpo: GrpoLossConfig = dataclasses.field(default_factory=GrpoLossConfig)
    beta: float = 0.0
    name: str = "rpt"
    columns: tuple[str, ...] = ()  # the trainer's columns (context, label, boundaries) are all it reads

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> RptObjective:
        return cls(
            cfg.task.reward, cfg.task.format_penalty, cfg.grpo.advantage, cfg.loss_config(), cfg.grpo.beta
        )

    @property
    def loss_agg(self) -> LossAgg:
        return get_loss_agg(self.grpo.loss_agg)

    def score(self, batch: RolloutBatch) -> RolloutBatch:
        t0 = time.perf_counter()
        device = batch.completion_ids.device
        rewards = score_rows(
            batch.predictions, batch.rows, batch.group_size, self.reward, self.format_penalty
        )
        advantages = compute_advantages(rewards, self.advantage).reshape(-1)  # (n, G) -> (n*G,)
        seconds = {**batch.seconds, "reward": time.perf_counter() - t0}
        return dataclasses.replace(
            batch, rewards=rewards.to(device), advantages=advantages.to(device), seconds=seconds
        )

    def loss(self, logp, old_logp, advantages, mask, ref_logp=None) -> tuple[torch.Tensor, dict]:
        return grpo_loss(logp, old_logp, advantages, mask, self.grpo, ref_logp=ref_logp, beta=self.beta)

    def metrics(self, batch: RolloutBatch) -> dict[str, float]:
        """``acc``: the share of completions whose prediction earned the full reward."""
        return {"acc": (batch.rewards == 1.0).float().mean().item()}
