"""Online RL from the reward model (RLOO, GRPO, online DPO): the pure losses against numbers worked out
by hand, then 2-step CPU runs of each method on the tiny model of ``test_policy``."""

import math

import pytest
import torch

from rlhf_organic.losses import clipped_token_loss, grpo_advantages, length_penalised, rloo_advantages

# ---- advantages -----------------------------------------------------------------------------------


def test_rloo_baseline_is_the_mean_of_the_other_replies():
    # reply 1: 1 - (2 + 3) / 2 = -1.5; reply 2: 2 - (1 + 3) / 2 = 0; reply 3: 3 - 1.5 = 1.5
    assert rloo_advantages(torch.tensor([[1.0, 2.0, 3.0]])).tolist() == [[-1.5, 0.0, 1.5]]
    assert rloo_advantages(torch.tensor([[4.0, 4.0], [0.0, 2.0]])).tolist() == [[0.0, 0.0], [-2.0, 2.0]]
    assert rloo_advantages(torch.tensor([[3.0], [5.0]])).tolist() == [[0.0], [0.0]]  # k 1: no baseline, no signal


def test_grpo_advantages_by_group_batch_or_unscaled():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    eps = 1e-4
    # group 1: mean 2, unbiased std 1; group 2: all equal -> 0, not 0/0
    assert torch.allclose(grpo_advantages(rewards, "group"), torch.tensor([[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]) / (1 + eps))
    # batch: mean 3.5, squared deviations 6.25 + 2.25 + 0.25 + 3 x 2.25 = 15.5, over 5: 3.1
    expected = torch.tensor([[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]) / (math.sqrt(3.1) + eps)
    assert torch.allclose(grpo_advantages(rewards, "batch"), expected)
    assert grpo_advantages(rewards, "none").tolist() == [[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    single = grpo_advantages(torch.tensor([[3.0], [7.0]]), "group")
    assert single.tolist() == [[0.0], [0.0]] and not single.isnan().any()
    with pytest.raises(ValueError, match="scale_rewards"):
        grpo_advantages(rewards, "std")


def test_length_penalty_takes_coef_per_token_past_the_cap():
    rewards = torch.tensor([1.0, 1.0, 2.0])
    assert torch.allclose(length_penalised(rewards, torch.tensor([3, 10, 5]), cap=5, coef=0.1), torch.tensor([1.0, 0.5, 2.0]))
    assert length_penalised(rewards, torch.tensor([3, 10, 5])).tolist() == rewards.tolist()  # coef 0: unchanged


# ---- the clipped token loss -------------------------------------------------------------------------

HALF, QUARTER = math.log(0.5), math.log(0.25)


def _leaf(values):
    return torch.tensor(values, requires_grad=True)


def test_first_step_on_fresh_samples_has_ratio_one_and_the_plain_policy_gradient():
    logps = _leaf([[HALF, QUARTER], [HALF, 0.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    advantages = torch.tensor([2.0, -1.0])
    loss, stats = clipped_token_loss(logps, logps.detach().clone(), advantages, mask)
    # ratio 1: the loss is the token mean of -A, (-2 - 2 + 1) / 3, and its gradient -A / 3 per token
    assert float(loss.detach()) == pytest.approx(-1.0)
    assert stats == {"clipfrac": 0.0, "ratio": pytest.approx(1.0), "kl": 0.0}
    loss.backward()
    assert torch.allclose(logps.grad, torch.tensor([[-2 / 3, -2 / 3], [1 / 3, 0.0]]))


def test_ratios_past_the_clip_stop_the_gradient_only_where_they_gain():
    old = torch.full((2, 1), HALF)
    logps = _leaf([[math.log(0.75)], [math.log(0.75)]])  # ratio 1.5 on both
    loss, stats = clipped_token_loss(logps, old, torch.tensor([1.0, -1.0]), torch.ones(2, 1), clip=0.2)
    # A = 1: max(-1.5, -1.2) = -1.2, clipped, no gradient; A = -1: max(1.5, 1.2) = 1.5, gradient -A r / 2 = 0.75
    assert float(loss.detach()) == pytest.approx((-1.2 + 1.5) / 2)
    assert stats["clipfrac"] == pytest.approx(0.5) and stats["ratio"] == pytest.approx(1.5)
    loss.backward()
    assert torch.allclose(logps.grad, torch.tensor([[0.0], [0.75]]))


def test_k3_kl_to_the_reference_in_the_loss():
    logps = _leaf([[HALF]])
    ref = torch.tensor([[QUARTER]])
    loss, stats = clipped_token_loss(logps, logps.detach().clone(), torch.zeros(1), torch.ones(1, 1), ref_logps=ref, kl_coef=0.1)
    # q = log 0.25 - log 0.5 = -log 2: exp(q) - q - 1 = 0.5 + log 2 - 1; d/dlog pi = 1 - exp(q) = 0.5
    kl = 0.5 + math.log(2) - 1
    assert stats["kl"] == pytest.approx(kl) and float(loss.detach()) == pytest.approx(0.1 * kl)
    loss.backward()
    assert float(logps.grad) == pytest.approx(0.1 * 0.5)
    same, stats = clipped_token_loss(logps, logps.detach(), torch.zeros(1), torch.ones(1, 1), ref_logps=logps.detach(), kl_coef=1)
    assert float(same.detach()) == 0 and stats["kl"] == 0  # the policy at the reference: KL 0


def _random_case(seed=0):
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(4, 5, generator=g) * 3
    old = logps + 0.3 * torch.randn(4, 5, generator=g)
    ref = logps + 0.3 * torch.randn(4, 5, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    return logps, old, ref, mask, torch.randn(4, generator=g)


def _loss_and_grad(logps, *args, **kwargs):
    logps = logps.clone().requires_grad_(True)
    loss, _ = clipped_token_loss(logps, *args, **kwargs)
    loss.backward()
    return float(loss.detach()), logps.grad


def test_weights_of_one_are_unweighted_and_weight_zero_gives_no_gradient():
    logps, old, ref, mask, adv = _random_case()
    kw = dict(ref_logps=ref, kl_coef=0.05)
    plain = _loss_and_grad(logps, old, adv, mask, **kw)
    ones = _loss_and_grad(logps, old, adv, mask, weights=torch.ones(4), **kw)
    assert ones[0] == pytest.approx(plain[0]) and torch.allclose(ones[1], plain[1])
    weights = torch.tensor([1.0, 0.0, 0.5, 1.0])
    value, grad = _loss_and_grad(logps, old, adv, mask, weights=weights, **kw)
    assert torch.all(grad[1] == 0) and torch.all(grad[0] != 0)
    # the same as leaving row 1 out: a weighted token mean over the other rows' tokens
    keep = [0, 2, 3]
    dropped = _loss_and_grad(logps[keep], old[keep], adv[keep], mask[keep], weights=weights[keep], ref_logps=ref[keep], kl_coef=0.05)
    assert value == pytest.approx(dropped[0]) and torch.allclose(grad[keep], dropped[1])


def test_micro_batches_divided_by_the_step_total_add_up_to_the_whole_step():
    logps, old, ref, mask, adv = _random_case(1)
    weights = torch.tensor([0.2, 1.0, 0.7, 0.4])
    total = float((mask.sum(1) * weights).sum())  # token_weight_sum of the whole step
    whole = _loss_and_grad(logps, old, adv, mask, ref_logps=ref, kl_coef=0.05, weights=weights)
    parts = [_loss_and_grad(logps[r], old[r], adv[r], mask[r], ref_logps=ref[r], kl_coef=0.05, weights=weights[r], total=total)
             for r in ([0, 1], [2, 3])]
    assert parts[0][0] + parts[1][0] == pytest.approx(whole[0])
    assert torch.allclose(torch.cat([parts[0][1], parts[1][1]]), whole[1])


def test_empty_and_all_masked_rows_give_zero_not_nan():
    logps = _leaf([[float("nan"), 0.0]])  # a padded position's garbage must not leak
    loss, stats = clipped_token_loss(logps, torch.zeros(1, 2), torch.ones(1), torch.zeros(1, 2), ref_logps=torch.zeros(1, 2), kl_coef=1)
    assert float(loss.detach()) == 0 and all(v == 0 for v in stats.values())
    loss.backward()
    assert torch.equal(logps.grad, torch.zeros(1, 2))
    empty = _leaf([[]])
    loss, _ = clipped_token_loss(empty, torch.zeros(1, 0), torch.ones(1), torch.zeros(1, 0), weights=torch.zeros(1), total=0.0)
    assert float(loss.detach()) == 0 and not loss.isnan()
