"""The update half of a step (rpt_train.rl.update): micro-batched backward equals the full-batch gradient,
old log-probs enter the ratio, masked truncated completions do not reach the gradient."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from rpt_core.model.logprobs import LogprobModule
from rpt_train.rl.grpo import GrpoLossConfig
from rpt_train.rl.objective_rpt import RptObjective
from rpt_train.rl.rollout import RolloutSpec, rollout, sampling_params
from rpt_train.rl.update import MicroBatchPlan, MicroBatchSettings, backward_micro_batches, batched_logprobs
from tests.helpers import TextTemplate, task_rows, tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ micro-batched backward (GRPO gradient)


def _rollout_batch(seed=0, max_new_tokens=5):
    """A real rollout of the tiny task with varied completion lengths and random advantages."""
    tok = tiny_tokenizer()
    model = tiny_model(tok, seed=seed)
    eos = tok.token_to_id("<|endoftext|>")
    with torch.no_grad():
        model.lm_head.weight[eos] = 0.0  # likely enough that some completions stop early
    template = TextTemplate()
    spec = RolloutSpec(sampling_params(template, tok, max_new_tokens, 1.0), num_generations=3)
    batch = rollout(
        model.eval(), tok, template, task_rows(4, seed), spec, torch.Generator().manual_seed(seed)
    )
    batch.advantages = torch.randn(batch.num_sequences, generator=torch.Generator().manual_seed(seed))
    return model.train(), batch


def _grads(model, batch, loss_agg="token-mean", mbs=100, extra_micro=0, mask_truncated=False, old=None):
    model.zero_grad(set_to_none=True)
    mask = batch.loss_mask(mask_truncated)
    objective = RptObjective(grpo=GrpoLossConfig(loss_agg=loss_agg, max_len=5))
    s = MicroBatchSettings(objective, temperature=0.9, micro_batch_size=mbs)
    n_micro = -(-batch.num_sequences // mbs) + extra_micro
    plan = MicroBatchPlan(n_micro, float(objective.loss_agg.normaliser(mask)))
    sums = backward_micro_batches(
        LogprobModule(model, chunk=2), batch, loss_mask=mask, settings=s, plan=plan, old_logp=old
    )
    return {n: p.grad.clone() for n, p in model.named_parameters()}, sums


@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batches_accumulate_the_full_batch_gradient(loss_agg):
    model, batch = _rollout_batch()
    assert batch.completion_mask.sum(-1).unique().numel() > 1, "want completions of different lengths"
    full, sums_full = _grads(model, batch, loss_agg)
    for mbs, extra in ((5, 0), (2, 3)):  # extra: zero-weight padding micro-batches (DDP lockstep)
        micro, sums = _grads(model, batch, loss_agg, mbs=mbs, extra_micro=extra)
        for name in full:
            torch.testing.assert_close(micro[name], full[name], atol=1e-6, rtol=1e-5)
        assert sums["loss"] == pytest.approx(sums_full["loss"], abs=1e-6)
        assert sums["tokens"] == sums_full["tokens"] == float(batch.completion_mask.sum())
    assert any(float(g.abs().sum()) > 0 for g in full.values())


def test_old_logprobs_change_the_ratio():
    """With stored old log-probs the surrogate uses pi/pi_old; equal to on-policy when old == current."""
    model, batch = _rollout_batch(seed=1)
    module = LogprobModule(model, chunk=3)
    old = batched_logprobs(module, batch, 0.9, 4, contextlib.nullcontext)
    on_policy, _ = _grads(model, batch)
    same, _ = _grads(model, batch, old=old)
    shifted, sums = _grads(model, batch, old=old - 0.5)  # ratio e^0.5 > 1 + eps: clipped for A > 0
    for name in on_policy:
        torch.testing.assert_close(same[name], on_policy[name], atol=1e-6, rtol=1e-5)
    assert sums["clip_frac"] > 0
    assert any(not torch.allclose(shifted[n], on_policy[n]) for n in on_policy)


def test_masked_truncated_completions_do_not_reach_the_gradient():
    model, batch = _rollout_batch(seed=2, max_new_tokens=3)
    assert bool(batch.truncated.any()) and not bool(batch.truncated.all())
    masked, _ = _grads(model, batch, mask_truncated=True)
    # Rewrite what the truncated completions say: with them masked, the gradient must not change.
    other = copy.copy(batch)
    other.completion_ids = batch.completion_ids.clone()
    t = batch.truncated
    other.completion_ids[t] = (batch.completion_ids[t] + 1) % 9
    masked_other, _ = _grads(model, other, mask_truncated=True)
    unmasked_other, _ = _grads(model, other, mask_truncated=False)
    unmasked, _ = _grads(model, batch, mask_truncated=False)
    for name in masked:
        torch.testing.assert_close(masked_other[name], masked[name], atol=1e-6, rtol=1e-5)
    assert any(not torch.allclose(unmasked_other[n], unmasked[n]) for n in unmasked)
