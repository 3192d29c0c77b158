"""GRPO math on tiny tensors whose results were worked out by hand (float32)."""

from __future__ import annotations

import math

import pytest
import torch

from rpt_core.runtime.errors import RptError
from rpt_train.rl.grpo import (
    ADVANTAGES,
    LOSS_AGG,
    GrpoLossConfig,
    aggregate_loss,
    anchor_advantages,
    clipped_surrogate,
    compute_advantages,
    frac_zero_std,
    group_advantages,
    grpo_loss,
    k3_kl,
    mean_advantages,
)


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


# ----------------------------------------------------------------------------------------- advantages


def test_anchor_required_numbers():
    adv = anchor_advantages(t([[2.0, 2.0], [2.0, 0.0]]))
    # [2,2,0]: mean 4/3, sample std sqrt((4/9+4/9+16/9)/2) = 1.1547 -> (2/3)/1.1547 = 0.577
    # [2,0,0]: mean 2/3, same std -> (4/3)/1.1547 = 1.155 and (-2/3)/1.1547 = -0.577
    torch.testing.assert_close(adv, t([[0.577, 0.577], [1.155, -0.577]]), atol=1e-3, rtol=0)


def test_anchor_all_zero_group_is_zero():
    assert anchor_advantages(t([[0.0, 0.0, 0.0]])).abs().max().item() == 0.0
    # G = 1 still works thanks to the anchor: [1, 0] -> mean 0.5, sample std 0.7071 -> +0.7071
    torch.testing.assert_close(anchor_advantages(t([[1.0]])), t([[0.7071]]), atol=1e-3, rtol=0)


def test_group_zscore_by_hand():
    # [1,0,0,1]: mean 0.5, sample std sqrt(4 * 0.25 / 3) = 0.57735 -> +-0.8660
    # [1,0,0,0]: mean 0.25, sample std sqrt((0.5625 + 3 * 0.0625) / 3) = 0.5 -> 1.5, -0.5
    adv = group_advantages(t([[1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]]))
    expected = t([[0.8660, -0.8660, -0.8660, 0.8660], [1.5, -0.5, -0.5, -0.5]])
    torch.testing.assert_close(adv, expected, atol=1e-3, rtol=0)


def test_group_all_equal_and_single_completion_are_exactly_zero():
    adv = group_advantages(t([[0.1, 0.1, 0.1], [1.0, 1.0, 1.0]]))
    assert adv.abs().max().item() == 0.0
    assert group_advantages(t([[1.0], [0.0]])).abs().max().item() == 0.0
    assert torch.isfinite(group_advantages(t([[1.0], [0.0]]))).all()


def test_mean_advantages_dr_grpo():
    adv = mean_advantages(t([[1.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0]]))
    torch.testing.assert_close(adv, t([[0.75, -0.25, -0.25, -0.25], [0.0, 0.0, 0.0, 0.0]]))


def test_advantage_registry():
    assert set(ADVANTAGES) == {"group", "anchor", "mean", "leave-one-out"}
    r = t([[2.0, 0.0]])
    torch.testing.assert_close(compute_advantages(r, "anchor"), anchor_advantages(r))
    with pytest.raises(RptError, match="anchor, group, leave-one-out, mean"):
        compute_advantages(r, "ppo")
    with pytest.raises(ValueError):
        group_advantages(t([1.0, 0.0]))  # not (N, G)


def test_frac_zero_std():
    assert frac_zero_std(t([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])) == pytest.approx(2 / 3)
    assert frac_zero_std(t([[1.0, 0.0]])) == 0.0
    assert frac_zero_std(t([[0.5]])) == 1.0


# ----------------------------------------------------------------------------------------- aggregation

LOSS = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 7.0, 7.0]]
MASK = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]  # last sequence is empty


def test_token_mean():
    # (1 + 2 + 3 + 4 + 5) / 5 tokens
    assert aggregate_loss(t(LOSS), t(MASK), "token-mean").item() == pytest.approx(3.0)


def test_seq_mean_token_mean():
    # sequence means 6/3 = 2 and 9/2 = 4.5; the empty sequence is not counted -> 3.25
    assert aggregate_loss(t(LOSS), t(MASK), "seq-mean-token-mean").item() == pytest.approx(3.25)


def test_seq_mean_token_sum_norm():
    # sums 6 and 9 over the constant max_len = 4 -> 1.5 and 2.25, mean 1.875
    got = aggregate_loss(t(LOSS), t(MASK), "seq-mean-token-sum-norm", max_len=4)
    assert got.item() == pytest.approx(1.875)
    # without max_len the constant is the padded width T = 3 -> (2 + 3) / 2
    assert aggregate_loss(t(LOSS), t(MASK), "seq-mean-token-sum-norm").item() == pytest.approx(2.5)


def test_aggregation_ignores_nan_padding_and_empty_mask():
    loss = t([[1.0, float("nan")], [float("inf"), 3.0]])
    mask = t([[1.0, 0.0], [0.0, 1.0]])
    for mode in LOSS_AGG:
        assert math.isfinite(aggregate_loss(loss, mask, mode, max_len=2).item()), mode
    assert aggregate_loss(t([[1.0, 2.0]]), t([[0.0, 0.0]]), "token-mean").item() == 0.0
    with pytest.raises(RptError, match="seq-mean-token-mean"):
        aggregate_loss(t(LOSS), t(MASK), "sum")


# ----------------------------------------------------------------------------------------- surrogate


def _clip_case():
    # row 0: A = +1, ratios 1.5 (above 1 + eps_high: clipped), 1.1, 0.5, 1.25 (inside the high range)
    # row 1: A = -1, ratios 0.5 (below 1 - eps: clipped), 0.9, 1.5 (not clipped for A < 0), 0.79 (clipped)
    ratios = t([[1.5, 1.1, 0.5, 1.25], [0.5, 0.9, 1.5, 0.79]])
    logp = ratios.log().clone().requires_grad_(True)
    old = torch.zeros(2, 4)
    adv = t([1.0, -1.0])
    return logp, old, adv


def test_clipping_zero_gradient_and_fraction():
    logp, old, adv = _clip_case()
    mask = torch.ones(2, 4)
    per_token, clip_frac = clipped_surrogate(logp, old, adv, mask, epsilon=0.2, epsilon_high=0.28)
    expected = t([[-1.28, -1.1, -0.5, -1.25], [0.8, 0.9, 1.5, 0.8]])
    torch.testing.assert_close(per_token.detach(), expected)
    assert clip_frac.item() == pytest.approx(3 / 8)
    per_token.sum().backward()
    # d(-A * ratio)/dlogp = -A * ratio where unclipped, 0 where the clipped term is active
    torch.testing.assert_close(logp.grad, t([[0.0, -1.1, -0.5, -1.25], [0.0, 0.9, 1.5, 0.0]]))


def test_symmetric_clip_catches_1_25():
    logp, old, adv = _clip_case()
    _, clip_frac = clipped_surrogate(logp, old, adv, torch.ones(2, 4), epsilon=0.2)
    assert clip_frac.item() == pytest.approx(4 / 8)


def test_clip_fraction_counts_only_mask_tokens():
    logp, old, adv = _clip_case()
    mask = t([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0]])  # hide two of the three clipped tokens
    _, clip_frac = clipped_surrogate(logp, old, adv, mask, epsilon=0.2, epsilon_high=0.28)
    assert clip_frac.item() == pytest.approx(1 / 6)


def test_k3_kl():
    lp = t([[-1.0, -2.0, math.log(0.5)]])
    assert k3_kl(lp, lp).abs().max().item() == 0.0
    # policy 0.5, ref 0.25: r = log 0.5 -> 0.5 - log 0.5 - 1 = 0.19315
    got = k3_kl(t([[math.log(0.5)]]), t([[math.log(0.25)]]))
    assert got.item() == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)
    assert (k3_kl(t([[-1.0, -3.0]]), t([[-2.0, -0.5]])) > 0).all()


# ----------------------------------------------------------------------------------------- grpo_loss


def test_grpo_loss_on_policy_gradient():
    # on-policy ratio = 1: token-mean loss = -(2 * 1 + 1 * (-0.5)) / 3 tokens; grad = -A / 3
    logp = t([[-1.0, -2.0], [-0.5, -3.0]]).requires_grad_(True)
    mask = t([[1.0, 1.0], [1.0, 0.0]])
    adv = t([1.0, -0.5])
    loss, metrics = grpo_loss(logp, logp.detach(), adv, mask, GrpoLossConfig())
    assert loss.item() == pytest.approx(-0.5)
    loss.backward()
    torch.testing.assert_close(logp.grad, t([[-1 / 3, -1 / 3], [0.5 / 3, 0.0]]))
    assert metrics["clip_frac"] == 0.0 and metrics["ratio_mean"] == pytest.approx(1.0)
    assert metrics["ppo_kl"] == 0.0 and metrics["loss"] == metrics["pg_loss"]
    assert all(v.dim() == 0 and not v.requires_grad for v in metrics.values())  # converted once per step


def test_grpo_loss_with_kl_and_aggregation():
    logp, old, adv = _clip_case()
    ref = logp.detach() - 0.1
    mask = torch.ones(2, 4)
    cfg = GrpoLossConfig(epsilon=0.2, epsilon_high=0.28, loss_agg="seq-mean-token-sum-norm", max_len=8)
    loss, metrics = grpo_loss(logp, old, adv, mask, cfg, ref_logp=ref, beta=0.5)
    pg = t([[-1.28, -1.1, -0.5, -1.25], [0.8, 0.9, 1.5, 0.8]])
    kl = math.exp(-0.1) + 0.1 - 1  # k3 with r = -0.1 on every token
    expected_pg = ((pg[0].sum() / 8 + pg[1].sum() / 8) / 2).item()
    assert metrics["pg_loss"] == pytest.approx(expected_pg, abs=1e-6)
    assert metrics["kl"] == pytest.approx(kl, abs=1e-6)
    assert loss.item() == pytest.approx(expected_pg + 0.5 * kl * 4 / 8, abs=1e-6)
    assert metrics["clip_frac"] == pytest.approx(3 / 8)


def test_grpo_loss_config_errors():
    with pytest.raises(RptError, match="loss_agg"):
        GrpoLossConfig(loss_agg="seq-sum")
    with pytest.raises(RptError):
        GrpoLossConfig(epsilon=0.0)
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(x, x, t([1.0]), torch.ones(1, 2), beta=0.1)
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(x, x, t([1.0, 2.0]), torch.ones(1, 2))
