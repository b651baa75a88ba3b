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


# ---- the methods on the tiny model (the fixture and helpers of test_policy) --------------------------

import numpy as np  # noqa: E402
from test_policy import _run, _section, sim  # noqa: E402, F401 - the module-scoped tiny dataset, base, reward model, judge

from rlhf_organic.policy.methods import METHODS  # noqa: E402

# two rounds of 2 contexts x 2 replies, all 4 replies in one step: exactly two optimizer steps
GROUP = {"rounds": 2, "contexts_per_round": 2, "k": 2, "epochs": 1, "minibatch_size": 4, "max_new_tokens": 8}
ONLINE = {"rloo": {"rloo": GROUP}, "grpo": {"grpo": GROUP}}


@pytest.mark.parametrize("method", ["rloo", "grpo"])
def test_two_steps_move_only_the_policy_lora_and_record_each_round(sim, method):  # noqa: F811
    policy, run = _run(sim, _section(sim, method, **ONLINE[method]))
    before = {n: p.detach().clone() for n, p in policy.peft.named_parameters()}
    result = METHODS[method].train(run)
    assert len(result["history"]) == 2 and all(np.isfinite(h["loss"]) for h in result["history"])
    changed = {n for n, p in policy.peft.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n and ".default." in n for n in changed)
    assert [r["round"] for r in result["rounds"]] == [1, 2] and result["items"] == 8
    for record in result["rounds"]:
        assert 1 <= record["reply_tokens"] <= 8 and np.isfinite(record["score"]) and np.isfinite(record["reward"])
    assert policy.value_head is None  # the group is the baseline: no critic


@pytest.mark.parametrize("method", ["rloo", "grpo"])
def test_micro_batches_train_what_whole_steps_train(sim, monkeypatch, method):  # noqa: F811
    """train.micro_batch_size 1: single-reply passes give the whole step's loss and gradient (token means and
    trust weights over the whole step)."""
    clip = torch.nn.utils.clip_grad_norm_
    trained = []
    for micro in (None, 1):
        grads: list = []

        def recording(params, *args, grads=grads, **kwargs):
            params = list(params)
            grads.append([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params])
            return clip(params, *args, **kwargs)

        monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
        section = _section(sim, method, **{method: {**GROUP, "trust": "both"}})
        section = section.model_copy(update={"train": section.train.model_copy(update={"micro_batch_size": micro})})
        policy, run = _run(sim, section)
        trained.append((METHODS[method].train(run)["history"], grads))
    (whole_history, whole_grads), (split_history, split_grads) = trained
    assert [h["loss"] for h in split_history] == pytest.approx([h["loss"] for h in whole_history], rel=1e-4, abs=1e-6)
    scale = max(float(g.abs().max()) for g in whole_grads[0])
    assert scale > 0
    for a, b in zip(split_grads[0], whole_grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)


def test_first_step_on_fresh_samples_has_ratio_one_and_kl_zero(sim):  # noqa: F811
    """Two epochs in minibatches: the sampling policy's log-probs are computed apart from training's, and
    must be the same numbers (ratio 1, nothing clipped), and a fresh adapter is the reference (KL 0)."""
    section = _section(sim, "grpo", grpo={**GROUP, "rounds": 1, "epochs": 2, "minibatch_size": 2})
    policy, run = _run(sim, section)
    result = METHODS["grpo"].train(run)
    first = result["history"][0]
    assert first["ratio"] == pytest.approx(1.0, abs=1e-6) and first["clipfrac"] == 0
    assert first["kl"] == pytest.approx(0.0, abs=1e-6) and result["rounds"][0]["kl_to_reference"] == pytest.approx(0.0, abs=1e-5)
    assert len(result["history"]) == 4 and result["history"][-1]["ratio"] != pytest.approx(1.0, abs=1e-6)


def test_trust_draws_contexts_or_weighs_their_loss(sim):  # noqa: F811
    from rlhf_organic.policy.methods.groups import pick_contexts

    policy, run = _run(sim, _section(sim, "rloo", rloo=GROUP))
    trust = np.array([0.0, 0.5, 0.0, 1.0])
    picked, weights = pick_contexts(run, trust, 40, "draw")
    assert set(picked) == {1, 3} and (weights == 1).all()
    assert np.mean(picked == 3) > 0.5  # twice as trusted, drawn about twice as often
    picked, weights = pick_contexts(run, trust, 40, "weight")
    assert set(picked) == {1, 3} and (weights == trust[picked]).all()
    # through a run: the replies' weights are their users' trust, and reach the objective's totals
    users = sorted(set(run.data.point["user_id"]) | set(run.data.pairs["user_id"]))
    run.user_weight = {u: (0.25 if i % 2 else 1.0) for i, u in enumerate(users)}
    section = _section(sim, "rloo", rloo={**GROUP, "trust": "weight"})
    run.section = section
    result = METHODS["rloo"].train(run)
    assert all(r["weight"] in (0.25, 0.625, 1.0) for r in result["rounds"])
    assert result["weight_sum"] == pytest.approx(sum(r["weight"] for r in result["rounds"]) * 4)


def test_length_penalty_and_kl_enter_rloo_reward(sim):  # noqa: F811
    section = _section(sim, "rloo", rloo={**GROUP, "rounds": 1, "kl_coef": 0.0, "length_cap": 0, "length_coef": 1.0})
    policy, run = _run(sim, section)
    record = METHODS["rloo"].train(run)["rounds"][0]
    assert record["kl_to_reference"] is None  # kl_coef 0: no reference pass at all
    # cap 0, coef 1: each reply loses 1 per token, so the mean reward is the mean score less the mean length
    assert record["reward"] == pytest.approx(record["score"] - record["reply_tokens"], abs=1e-5)
    section = _section(sim, "rloo", rloo={**GROUP, "rounds": 1, "kl_coef": 0.5})
    policy, run = _run(sim, section)
    record = METHODS["rloo"].train(run)["rounds"][0]
    # a fresh adapter is the reference: KL 0, so the reward is the score
    assert record["kl_to_reference"] == pytest.approx(0.0, abs=1e-5) and record["reward"] == pytest.approx(record["score"], abs=1e-5)


def test_online_rl_needs_a_reward_model_and_refuses_fsdp(sim):  # noqa: F811
    for method in ("rloo", "grpo", "online_dpo"):
        policy, run = _run(sim, _section(sim, method), reward=False)
        with pytest.raises(ValueError, match="reward model"):
            METHODS[method].train(run)
        assert not METHODS[method].supports_fsdp and METHODS[method].online


def test_online_dpo_pairs_the_best_and_worst_and_skips_near_ties():
    from rlhf_organic.policy.methods.online_dpo import best_and_worst

    ranking = torch.tensor([[0.1, 0.9, 0.5], [2.0, 2.0, 2.0], [1.0, 0.0, 0.95]])
    assert best_and_worst(ranking, 0.0) == [(0, 1, 0), (2, 0, 1)]  # equal scores: no pair
    assert best_and_worst(ranking, 0.85) == [(2, 0, 1)]  # context 0's gap 0.8 is a near-tie at min_gap 0.85


def test_online_dpo_two_steps_train_the_lora_on_pairs_of_its_own_samples(sim):  # noqa: F811
    section = _section(sim, "online_dpo", online_dpo={**GROUP, "minibatch_size": 2, "trust": "both"})
    policy, run = _run(sim, section)
    before = {n: p.detach().clone() for n, p in policy.peft.named_parameters()}
    result = METHODS["online_dpo"].train(run)
    assert 1 <= len(result["history"]) <= 2 and all(np.isfinite(h["loss"]) for h in result["history"])
    # the first step's pairs are scored by the fresh adapter, which is the reference: DPO's loss is log 2
    assert result["history"][0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    changed = {n for n, p in policy.peft.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n and ".default." in n for n in changed)
    for record in result["rounds"]:
        if record["pairs"]:
            assert record["chosen_score"] > record["rejected_score"]
    assert result["items"] == sum(r["pairs"] for r in result["rounds"])
    with pytest.raises(ValueError, match="no pairs"):
        _, run = _run(sim, _section(sim, "online_dpo", online_dpo={**GROUP, "min_gap": 1e6}))
        METHODS["online_dpo"].train(run)
