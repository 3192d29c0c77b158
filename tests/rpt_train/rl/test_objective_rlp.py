"""RLP's objective (rpt_train.rl.objective_rlp): the information gain and leave-one-out advantages by hand,
thoughts stopped at and closed with ``</think>``, scores equal to plain forwards, the EMA update, and a
gradient that reaches the thought tokens only."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rpt_core.model.logprobs import LogprobModule
from rpt_core.runtime.errors import RptError
from rpt_core.text.prompts import load_template
from rpt_train.rl.config import TrainConfig
from rpt_train.rl.grpo import GrpoLossConfig, compute_advantages, leave_one_out_advantages
from rpt_train.rl.objective import ObjectiveContext, build_objective
from rpt_train.rl.objective_rlp import RlpObjective, close_thought, information_gain
from rpt_train.rl.rollout import RolloutSpec, rollout, sampling_params, stop_token_ids
from rpt_train.rl.update import MicroBatchPlan, MicroBatchSettings, backward_micro_batches
from tests.helpers import repeat_rows, tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------ pure math


def test_information_gain_sums_the_per_token_gains_of_existing_targets():
    reasoned = torch.tensor([[[-1.0, -2.0], [-3.0, -0.5]]])  # (1 context, G=2, k=2)
    base = torch.tensor([[-2.0, -1.0]])  # (1, 2)
    both = torch.tensor([[True, True]])
    first = torch.tensor([[True, False]])  # the row has one ground-truth token only
    # thought 0: (-1 + 2) + (-2 + 1) = 0; thought 1: (-3 + 2) + (-0.5 + 1) = -0.5
    assert information_gain(reasoned, base, both).tolist() == [[0.0, -0.5]]
    assert information_gain(reasoned, base, first).tolist() == [[1.0, -1.0]]


def test_leave_one_out_advantage_is_each_reward_against_the_mean_of_the_others():
    r = torch.tensor([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0]])
    adv = leave_one_out_advantages(r)
    # G/(G-1) (r - mean) with mean 3: 4/3 * [-2, -1, 0, 3]; r_0 - mean(2, 3, 6) = 1 - 11/3 = -8/3
    torch.testing.assert_close(adv[0], torch.tensor([-8 / 3, -4 / 3, 0.0, 4.0]))
    assert adv[1].tolist() == [0.0] * 4  # equal rewards: no signal
    assert leave_one_out_advantages(torch.tensor([[7.0]])).tolist() == [[0.0]]  # G = 1: nothing to compare
    assert torch.equal(compute_advantages(r, "leave-one-out"), adv)  # a registered estimator


def test_close_thought():
    end, eos = 9, 7
    assert close_thought([1, 2, end], end, {eos}) == ([1, 2, end], False)  # closed by the policy
    assert close_thought([1, 2, 3], end, {eos}) == ([1, 2, 3, end], True)  # cut off at the budget
    assert close_thought([1, eos], end, {eos}) == ([1, end], True)  # ended by end-of-text
    assert close_thought([], end, {eos}) == ([end], True)


# ------------------------------------------------------------------------------------------ the objective


@pytest.fixture
def tok():
    return tiny_tokenizer(think=True)


def attached(tok, model, **kw) -> RlpObjective:
    objective = RlpObjective(**kw)
    objective.attach(
        ObjectiveContext(
            model, tok, micro_batch_size=3, logprob_chunk=4, stop_ids=stop_token_ids(tok), pad_id=tok.pad_id
        )
    )
    return objective


def rlp_rollout(tok, model, objective, rows, G=3, max_new_tokens=4, seed=0):
    template = load_template("think")
    spec = RolloutSpec(sampling_params(template, tok, max_new_tokens, 1.0), num_generations=G)
    spec = objective.rollout_spec(spec, tok)
    with torch.no_grad():
        return rollout(model.eval(), tok, template, rows, spec, torch.Generator().manual_seed(seed))


def test_config_builds_rlp_and_refuses_a_template_without_thought(tmp_path):
    cfg = TrainConfig.from_flat(objective="rlp", template="think", rlp_tokens=2, ema_decay=0.5)
    objective = build_objective(cfg)
    assert isinstance(objective, RlpObjective) and (objective.tokens, objective.ema_decay) == (2, 0.5)
    with pytest.raises(RptError, match="needs a thinking template"):
        build_objective(TrainConfig.from_flat(objective="rlp", template="plain"))


def test_attach_refuses_fsdp_and_a_tokenizer_without_think_tokens(tok):
    with pytest.raises(RptError, match="--fsdp"):
        RlpObjective().attach(ObjectiveContext(tiny_model(tok), tok, fsdp=True))
    plain = tiny_tokenizer()
    with pytest.raises(RptError, match="</think>"):
        RlpObjective().attach(ObjectiveContext(tiny_model(plain), plain))


def test_thoughts_stop_at_the_end_of_thinking(tok):
    model = tiny_model(tok)
    end = tok.token_to_id("</think>")
    with torch.no_grad():
        model.lm_head.weight[end] = 0.3 * model.model.norm.weight.sign()  # likely: some thoughts close early
    objective = attached(tok, model)
    batch = rlp_rollout(tok, model, objective, repeat_rows(4, 0, tok), G=4, max_new_tokens=6)
    lengths = batch.completion_mask.sum(-1)
    closed = [bool(ids[n - 1] == end) for ids, n in zip(batch.completion_ids, lengths.tolist(), strict=True)]
    assert any(closed) and not all(closed), "want thoughts both closed by the policy and cut off"
    for ids, n, c in zip(batch.completion_ids.tolist(), lengths.tolist(), closed, strict=True):
        assert end not in ids[: n - 1]  # nothing is sampled after </think>
        assert c or n == 6 or ids[n - 1] in stop_token_ids(tok)


def test_score_is_the_information_gain_of_plain_forwards(tok):
    """Rewards = log p(y | prompt, thought, </think>) - log p_ema(y | context), here by full forwards."""
    model = tiny_model(tok)
    objective = attached(tok, model, tokens=2)
    rows = repeat_rows(3, 0, tok)
    rows[1] = {**rows[1], "label_token_ids": rows[1]["label_token_ids"][:1]}  # a row near a document end
    batch = objective.score(rlp_rollout(tok, model, objective, rows, G=2, max_new_tokens=3))
    end, G = tok.token_to_id("</think>"), 2

    @torch.no_grad()
    def logp(ids, targets):  # log p of targets after ids, by one full forward
        x = torch.tensor([ids + targets])
        lp = F.log_softmax(model(x)[0].double(), -1)
        return sum(float(lp[len(ids) - 1 + j, t]) for j, t in enumerate(targets))

    tokens = 0
    for i, row in enumerate(rows):
        y = list(row["label_token_ids"][:2])
        prompt = tok.encode(row["context"] + "<think>")
        base = logp(tok.encode(row["context"]), y)  # the EMA is still the policy's copy
        tokens += len(tok.encode(row["context"])) + len(y)
        for j in range(G):
            s = i * G + j
            comp = batch.completion_ids[s][batch.completion_mask[s]].tolist()
            assert batch.details["unclosed"][i, j].item() == (comp[-1] != end)
            if comp[-1] in stop_token_ids(tok):
                comp = comp[:-1]  # an end-of-text token is not part of the thought
            thought = comp if comp and comp[-1] == end else comp + [end]
            assert batch.rewards[i, j].item() == pytest.approx(logp(prompt + thought, y) - base, abs=1e-4)
            tokens += len(prompt) + len(thought) + len(y)
        assert batch.details["ema_logp"][i].item() == pytest.approx(base, abs=1e-4)
    assert batch.score_tokens == tokens  # every scoring forward's real tokens count as compute
    torch.testing.assert_close(batch.advantages, leave_one_out_advantages(batch.rewards).reshape(-1))
    assert not batch.format_failed.any() and not batch.rewards.requires_grad
    assert all(p.grad is None for p in model.parameters())
    m = objective.metrics(batch)
    assert m["info_gain_mean"] == pytest.approx(batch.rewards.mean().item())
    assert m["info_gain_pos_frac"] == pytest.approx((batch.rewards > 0).float().mean().item())
    expected = {
        "info_gain_std",
        "ema_logp",
        "reasoned_logp",
        "thought_len_mean",
        "thought_truncated",
        "thought_unclosed",
    }
    assert expected <= m.keys() and all(math.isfinite(v) for v in m.values())


def test_ema_moves_toward_the_policy_after_each_step_and_round_trips(tok):
    model = tiny_model(tok)
    objective = attached(tok, model, ema_decay=0.75)
    before = {k: v.clone() for k, v in objective.ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    objective.after_step(model)
    for k, v in objective.ema.state_dict().items():
        torch.testing.assert_close(v, before[k] + 0.25)  # 0.75 * old + 0.25 * (old + 1)
    assert all(v.dtype == torch.float32 for v in objective.ema.state_dict().values())
    other = attached(tok, tiny_model(tok, seed=1))
    other.load_state_dict(objective.state_dict())
    for k, v in other.ema.state_dict().items():
        assert torch.equal(v, objective.ema.state_dict()[k])
    with pytest.raises(RptError, match="EMA"):
        other.load_state_dict({})


def test_the_gradient_reaches_the_thought_tokens_only(tok):
    """The update's gradient is that of -A * log p over the thought tokens (up to and including </think>);
    the scored ground-truth tokens after the thought contribute nothing."""
    model = tiny_model(tok)
    objective = attached(tok, model, tokens=2, grpo=GrpoLossConfig(loss_agg="token-mean"))
    batch = objective.score(rlp_rollout(tok, model, objective, repeat_rows(3, 1, tok), G=3))
    assert batch.advantages.abs().sum() > 0
    model.train()
    mask = batch.loss_mask()
    s = MicroBatchSettings(objective, temperature=1.0, micro_batch_size=4)
    n_micro = -(-batch.num_sequences // 4)
    backward_micro_batches(
        LogprobModule(model),
        batch,
        loss_mask=mask,
        settings=s,
        plan=MicroBatchPlan(n_micro, float(mask.sum())),
    )
    got = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad(set_to_none=True)
    ids, attn, P = batch.sequences()  # prompt + completion: the thought, nothing after it
    logits = model(ids, attention_mask=attn)  # (S, P + T, V)
    logp = F.log_softmax(logits[:, P - 1 : -1], -1).gather(-1, ids[:, P:, None])[..., 0]  # (S, T)
    m = batch.completion_mask.float()
    (-(batch.advantages[:, None] * logp * m).sum() / m.sum()).backward()  # on-policy: ratio 1
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, atol=1e-6, rtol=1e-4)
