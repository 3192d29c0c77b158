"""RLP's objective (NVIDIA, arXiv 2510.01265, "Reinforcement as a Pretraining Objective").

For a context x_<t and its next tokens y = x_t .. x_{t+k-1} (the shard row's ``label_token_ids``), the
policy samples G thoughts after the context (a thinking template: ``think`` puts ``<think>`` after the
context) and stops *at* ``</think>``. Each thought c_i is rewarded by its information gain

    r_i = sum_j [ log p_theta(y_j | x_<t, c_i, y_<j) - log p_ema(y_j | x_<t, y_<j) ]

where p_theta is the policy scoring the ground truth after ``context <think> c_i </think>`` and p_ema is
a no-think baseline: an exponential moving average of the policy's weights (decay ``--ema-decay``,
updated after every optimizer step) scoring the same tokens directly after the raw context. A thought
cut off at ``--max-new-tokens`` (or ended by an end-of-text token) is closed with ``</think>`` here and
scored like any other; ``thought_unclosed`` says how often. Advantages are leave-one-out,
A_i = G/(G-1) (r_i - mean_j r_j), with no std normalisation; the loss is the GRPO clipped surrogate
(``rpt_train.rl.grpo``) over the completion tokens, which here are exactly the thought tokens up to and
including ``</think>``. The scored log-likelihoods are computed without gradient, so the prediction
itself is never trained directly: only the thoughts are.

The information gain and the advantages are pure functions (``information_gain``,
``rpt_train.rl.grpo.leave_one_out_advantages``) so tests can check them by hand. The EMA weights are
the objective's own state (``state_dict``: part of ``trainer_state.pt``, never of ``model.safetensors``),
kept in float32 whatever the policy's dtype: with decay 0.999 a bfloat16 average would round most
updates away.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from rpt_core.model import Qwen3ForCausalLM
from rpt_core.model.generation import left_pad
from rpt_core.model.logprobs import LogprobModule
from rpt_core.runtime.errors import RptError
from rpt_core.text.chat import THINK_CLOSE
from rpt_train.rl.grpo import GrpoLossConfig, LossAgg, get_loss_agg, grpo_loss, leave_one_out_advantages
from rpt_train.rl.rollout import RolloutBatch, RolloutSpec, truncate_context
from rpt_train.rl.update import sequence_logprobs

if TYPE_CHECKING:
    from rpt_core.text.tokenizer import Tokenizer
    from rpt_train.rl.config import TrainConfig
    from rpt_train.rl.objective import ObjectiveContext


# ------------------------------------------------------------------------------------------ the math


def information_gain(
    reasoned_logp: torch.Tensor,  # (N, G, k): log p_theta(y_j | context, thought_i, y_<j)
    base_logp: torch.Tensor,  # (N, k): log p_ema(y_j | context, y_<j)
    mask: torch.Tensor,  # (N, k) bool: target j exists for context n (rows near a document end have fewer)
) -> torch.Tensor:
    """Per-thought reward (N, G): the summed per-token gain of log-likelihood over the no-think baseline."""
    gain = reasoned_logp.float() - base_logp.float()[:, None, :]  # (N, G, k)
    return torch.where(mask[:, None, :], gain, torch.zeros_like(gain)).sum(-1)  # (N, G)


def close_thought(completion: Sequence[int], end_id: int, stop_ids: Sequence[int]) -> tuple[list[int], bool]:
    """The thought as it is scored: the completion without a final end-of-text token, ending in ``</think>``.

    Returns (token ids, closed here): ``closed here`` is True when the policy did not write ``</think>``
    itself (cut off at the token budget, or stopped by an end-of-text token), so it was appended.
    """
    ids = list(completion)
    if ids and ids[-1] in stop_ids and ids[-1] != end_id:
        ids = ids[:-1]
    if ids and ids[-1] == end_id:
        return ids, False
    return [*ids, end_id], True


# ------------------------------------------------------------------------------------------ the objective


class RlpObjective:
    """``--objective rlp``; ``attach`` (the trainer's policy and tokenizer) must precede ``score``."""

    name = "rlp"
    columns = ("label_token_ids",)  # y: the ground-truth tokens from position t on

    def __init__(
        self,
        tokens: int = 1,
        ema_decay: float = 0.999,
        grpo: GrpoLossConfig | None = None,
        beta: float = 0.0,
        max_prompt_tokens: int = 1024,
    ):
        if tokens < 1:
            raise RptError(f"rlp-tokens must be >= 1, got {tokens}")
        if not 0.0 <= ema_decay <= 1.0:
            raise RptError(f"ema-decay must be in [0, 1], got {ema_decay}")
        self.tokens, self.ema_decay, self.beta = tokens, ema_decay, beta
        self.grpo = grpo or GrpoLossConfig()
        self.max_prompt_tokens = max_prompt_tokens
        self.ctx: ObjectiveContext | None = None
        self.ema: Qwen3ForCausalLM | None = None
        self.end_id = -1

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> RlpObjective:
        if not cfg.template_obj().thinks:
            raise RptError(
                f"--objective rlp samples a thought before the next token: it needs a thinking "
                f"template (think, qwen3-think, answer-tags), not {cfg.task.template}"
            )
        return cls(
            cfg.task.rlp_tokens,
            cfg.task.ema_decay,
            cfg.loss_config(),
            cfg.grpo.beta,
            cfg.task.max_prompt_tokens,
        )

    @property
    def loss_agg(self) -> LossAgg:
        return get_loss_agg(self.grpo.loss_agg)

    # ---- the trainer's hooks ----
    def attach(self, ctx: ObjectiveContext) -> None:
        """Take the policy and tokenizer; start the EMA baseline as a float32 copy of the policy."""
        if ctx.fsdp:
            raise RptError(
                "--objective rlp does not support --fsdp yet (its EMA baseline is a full copy "
                "of the weights on every rank); use DDP"
            )
        end = ctx.tokenizer.token_to_id(THINK_CLOSE)
        if end is None:
            raise RptError(f"--objective rlp needs a tokenizer with a single {THINK_CLOSE} token")
        self.ctx, self.end_id = ctx, end
        model = ctx.model
        with torch.device("meta"):
            ema = Qwen3ForCausalLM(model.config)
        state = {k: v.detach().to(torch.float32, copy=True) for k, v in model.state_dict().items()}
        ema.load_state_dict(state, assign=True)
        ema.tie_weights()
        self.ema = ema.eval().requires_grad_(False)

    def rollout_spec(self, spec: RolloutSpec, tokenizer: Tokenizer) -> RolloutSpec:
        """Thoughts stop *at* ``</think>``: what follows is scored, never sampled."""
        end = tokenizer.token_to_id(THINK_CLOSE)
        if end is None:
            raise RptError(f"--objective rlp needs a tokenizer with a single {THINK_CLOSE} token")
        return dataclasses.replace(spec, sampling=dataclasses.replace(spec.sampling, stop_after=(end, 0)))

    @torch.no_grad()
    def after_step(self, model: torch.nn.Module) -> None:
        """ema <- decay * ema + (1 - decay) * policy, after every optimizer step."""
        ema = self._need_ema()
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach().float(), 1.0 - self.ema_decay)

    # ---- scoring ----
    @torch.no_grad()
    def score(self, batch: RolloutBatch) -> RolloutBatch:
        ctx, ema = self.ctx, self._need_ema()
        assert ctx is not None
        t0 = time.perf_counter()
        n, G, k = batch.num_groups, batch.group_size, self.tokens
        targets = [[int(t) for t in r["label_token_ids"][:k]] for r in batch.rows]  # (n, <= k)
        if any(not t for t in targets):
            raise RptError("a shard row has no label_token_ids: RLP needs the ground-truth next token")
        stop_ids = set(ctx.stop_ids)
        prompts = [p[m].tolist() for p, m in zip(batch.prompt_ids, batch.prompt_mask, strict=True)]
        thoughts, unclosed = [], []
        for s in range(batch.num_sequences):
            comp = batch.completion_ids[s][batch.completion_mask[s]].tolist()
            ids, closed_here = close_thought(comp, self.end_id, stop_ids)
            thoughts.append(prompts[s // G] + ids)
            unclosed.append(closed_here)
        contexts = [self._context_ids(r["context"]) for r in batch.rows]
        with ctx.autocast():
            reasoned, reasoned_tokens = self._target_logprobs(
                ctx.model, thoughts, [targets[s // G] for s in range(n * G)]
            )  # (n*G, k)
            base, base_tokens = self._target_logprobs(ema, contexts, targets)  # (n, k)
        device = batch.completion_ids.device
        mask = torch.zeros(n, k, dtype=torch.bool)  # (n, k)
        for i, t in enumerate(targets):
            mask[i, : len(t)] = True
        mask = mask.to(device)
        reasoned = reasoned.view(n, G, k)  # (n, G, k)
        rewards = information_gain(reasoned, base, mask)  # (n, G)
        advantages = leave_one_out_advantages(rewards).reshape(-1)  # (n*G,)
        details = {
            "ema_logp": torch.where(mask, base, torch.zeros_like(base)).sum(-1),  # (n,)
            "reasoned_logp": torch.where(mask[:, None, :], reasoned, torch.zeros_like(reasoned)).sum(-1),
            "unclosed": torch.tensor(unclosed, device=device).view(n, G),  # (n, G)
        }
        return dataclasses.replace(
            batch,
            rewards=rewards,
            advantages=advantages,
            format_failed=torch.zeros_like(batch.format_failed),  # RLP asks for no answer format
            details=details,
            score_tokens=reasoned_tokens + base_tokens,
            seconds={**batch.seconds, "reward": time.perf_counter() - t0},
        )

    def _context_ids(self, context: str) -> list[int]:
        """The raw context, truncated as the rollout truncates it, with no template around it."""
        tok = self.ctx.tokenizer  # type: ignore[union-attr]
        ids = tok.encode(truncate_context(tok, context, self.max_prompt_tokens))
        return ids or [tok.pad_id or 0]

    def _target_logprobs(
        self, model: Qwen3ForCausalLM, prefixes: list[list[int]], targets: list[list[int]]
    ) -> tuple[torch.Tensor, int]:
        """(log p(targets | prefix) (B, k) float32 at temperature 1, 0 past a row's targets; real tokens run).

        The prefixes are the prompts and the targets the completions of the trainer's own batched
        log-prob path (``rpt_train.rl.update.sequence_logprobs``: micro-batched, trimmed of padding).
        """
        ctx = self.ctx
        assert ctx is not None
        B, k, pad = len(prefixes), self.tokens, ctx.pad_id
        device = ctx.model.device
        p_ids, p_mask = left_pad(prefixes, pad, device)  # (B, P)
        t_ids = torch.full((B, k), pad, dtype=torch.long)  # (B, k)
        t_mask = torch.zeros(B, k, dtype=torch.bool)  # (B, k)
        for i, t in enumerate(targets):
            t_ids[i, : len(t)] = torch.as_tensor(t)
            t_mask[i, : len(t)] = True
        ids = torch.cat([p_ids, t_ids.to(device)], dim=1)  # (B, P + k)
        attn = torch.cat([p_mask, t_mask.to(device)], dim=1).long()  # (B, P + k)
        # score() has entered the trainer's autocast already. All k target columns stay in every forward,
        # also where a micro-batch's rows all end early (near a document end): the forward shapes, and
        # so the rewards' rounding, are the ones RLP has always scored with.
        module = LogprobModule(model, ctx.logprob_chunk)
        out = sequence_logprobs(
            module, ids, attn, p_ids.shape[1], 1.0, ctx.micro_batch_size, trim_completions=False
        )  # (B, k)
        return out, int(attn.sum())

    # ---- loss and metrics ----
    def loss(self, logp, old_logp, advantages, mask, ref_logp=None) -> tuple[torch.Tensor, dict]:
        """The clipped surrogate over the thought tokens (the whole completion: it stops at ``</think>``)."""
        return grpo_loss(logp, old_logp, advantages, mask, self.grpo, ref_logp=ref_logp, beta=self.beta)

    def metrics(self, batch: RolloutBatch) -> dict[str, float]:
        """Information gain mean / std / share > 0, the baseline's and the reasoned log-likelihood of the
        ground truth, thought length, and how many thoughts were cut off or closed here."""
        r = batch.rewards.float()  # (n, G)
        d = batch.details
        return {
            "info_gain_mean": r.mean().item(),
            "info_gain_std": r.std(unbiased=False).item(),
            "info_gain_pos_frac": (r > 0).float().mean().item(),
            "ema_logp": d["ema_logp"].float().mean().item(),
            "reasoned_logp": d["reasoned_logp"].float().mean().item(),
            "thought_len_mean": batch.completion_mask.sum(-1).float().mean().item(),
            "thought_truncated": batch.truncated.float().mean().item(),
            "thought_unclosed": d["unclosed"].float().mean().item(),
        }

    # ---- state ----
    def _need_ema(self) -> Qwen3ForCausalLM:
        if self.ema is None:
            raise RuntimeError("RlpObjective.attach(context) must be called before it is used")
        return self.ema

    def state_dict(self) -> dict:
        return {"ema": self._need_ema().state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "ema" not in state:
            raise RptError("the checkpoint holds no RLP EMA baseline (written with another --objective?)")
        self._need_ema().load_state_dict(state["ema"])
