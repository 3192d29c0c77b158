"""Objectives: how the trainer turns a batch of rollouts into rewards, advantages and a loss.

The trainer knows nothing of rewards or surrogates. It hands its objective what the objective may need
(``attach``: the policy, the tokenizer, how to run forwards), lets it shape the rollouts
(``rollout_spec``), rolls out, hands the batch to ``score`` (rewards and advantages), computes log-probs,
asks ``loss`` for the per-micro-batch loss it differentiates, and calls ``after_step`` after every
optimizer step. A second objective is a new file registered in ``OBJECTIVES``, not branches in the
trainer. An objective carries state only if it needs some (``state_dict`` / ``load_state_dict`` are part
of the trainer's checkpoint state); ``ObjectiveHooks`` gives a stateless one all five hooks as no-ops.

Registered:
- ``rpt`` (``rpt_train.rl.objective_rpt``): RPT's prefix-match reward -> group advantages -> the GRPO
  clipped surrogate.
- ``rlp`` (``rpt_train.rl.objective_rlp``): RLP's information gain of a thought over an EMA no-think
  baseline -> leave-one-out advantages -> the clipped surrogate on thought tokens.

This module imports no objective at load time (the objectives subclass ``ObjectiveHooks`` from here, and
``rpt_train.rl.config`` reads ``OBJECTIVE_NAMES`` for its ``--objective`` choices): each registry entry
imports its module when it is built.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from rpt_core.runtime.errors import RptError

if TYPE_CHECKING:
    from rpt_core.model import Qwen3ForCausalLM
    from rpt_core.text.tokenizer import Tokenizer
    from rpt_train.rl.config import TrainConfig
    from rpt_train.rl.grpo import LossAgg
    from rpt_train.rl.rollout import RolloutBatch, RolloutSpec


@dataclass(frozen=True)
class ObjectiveContext:
    """What the trainer lends its objective once the policy is loaded (``Objective.attach``)."""

    model: Qwen3ForCausalLM  # the policy, unwrapped (no DDP): for no-grad scoring forwards
    tokenizer: Tokenizer
    micro_batch_size: int = 8  # sequences per scoring forward
    logprob_chunk: int = 1024  # tokens per LM-head chunk
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext  # the trainer's
    stop_ids: tuple[int, ...] = ()  # end-of-text ids that end a rollout
    pad_id: int = 0
    fsdp: bool = False  # parameters are sharded (FSDP2)


class Objective(Protocol):
    """What the trainer needs from an objective."""

    name: str
    columns: tuple[str, ...]  # shard columns ``score`` reads beyond the trainer's own (rpt_train.rl.trainer)

    @property
    def loss_agg(self) -> LossAgg:
        """The aggregation ``loss`` reduces with; its normaliser weights micro-batches exactly."""
        ...

    def attach(self, ctx: ObjectiveContext) -> None:
        """Called once the policy is loaded and before a resume restores ``load_state_dict``."""
        ...

    def rollout_spec(self, spec: RolloutSpec, tokenizer: Tokenizer) -> RolloutSpec:
        """The rollout settings the objective needs, from the run's (e.g. its own stopping rule)."""
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

    def after_step(self, model: torch.nn.Module) -> None:
        """Called after every optimizer step with the updated policy (unwrapped)."""
        ...

    def metrics(self, batch: RolloutBatch) -> dict[str, float]:
        """Objective-specific numbers about a scored batch, logged every step."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class ObjectiveHooks:
    """The trainer's hooks as no-ops, for an objective that needs no model, keeps the run's rollout
    settings, and has no state: it implements ``score``, ``loss``, ``loss_agg`` and ``metrics`` only."""

    def attach(self, ctx: ObjectiveContext) -> None:
        del ctx

    def rollout_spec(self, spec: RolloutSpec, tokenizer: Tokenizer) -> RolloutSpec:
        del tokenizer
        return spec

    def after_step(self, model: torch.nn.Module) -> None:
        del model

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        del state


def _rpt(cfg: TrainConfig) -> Objective:
    from rpt_train.rl.objective_rpt import RptObjective  # here: it subclasses ObjectiveHooks above

    return RptObjective.from_config(cfg)


def _rlp(cfg: TrainConfig) -> Objective:
    from rpt_train.rl.objective_rlp import RlpObjective  # here: it loads the model code for its EMA

    return RlpObjective.from_config(cfg)


OBJECTIVES: dict[str, Callable[[TrainConfig], Objective]] = {"rpt": _rpt, "rlp": _rlp}
OBJECTIVE_NAMES = tuple(OBJECTIVES)  # ``--objective``'s choices (rpt_train.rl.config)


def build_objective(cfg: TrainConfig) -> Objective:
    """The objective named by ``cfg.task.objective``, configured from ``cfg``."""
    try:
        factory = OBJECTIVES[cfg.task.objective]
    except KeyError:
        raise RptError(
            f"unknown objective {cfg.task.objective!r}; valid: {', '.join(sorted(OBJECTIVES))}"
        ) from None
    return factory(cfg)
