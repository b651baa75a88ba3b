"""Policy losses against hand-computed values, the weighting identities, and TRL's DPO and KTO losses."""

import math

import pytest
import torch

from rlhf_organic.losses import cringe, dpo, kto, token_nll
from rlhf_organic.policy.model import completion_logps, token_logps
from rlhf_organic.sequences import batch_sequences

LN2 = math.log(2)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_dpo_sigmoid_by_hand():
    # h = beta * ((2 - 1) - (0 - 0)) = 0.5 and h = beta * (0 - 0) = 0
    chosen, rejected = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0])
    assert dpo(chosen, rejected, beta=0.25).item() == pytest.approx((softplus(-0.5) + LN2) / 2)
    assert dpo(chosen, rejected, torch.tensor([3.0, 1.0]), beta=0.25).item() == pytest.approx((3 * softplus(-0.5) + LN2) / 4)
    # conservative DPO: (1 - e) * softplus(-h) + e * softplus(h)
    assert dpo(chosen[:1], rejected[:1], beta=0.25, label_smoothing=0.1).item() == pytest.approx(
        0.9 * softplus(-0.5) + 0.1 * softplus(0.5))


def test_dpo_robust_and_ipo_by_hand():
    chosen, rejected = torch.tensor([1.0]), torch.tensor([-1.0])  # h = 0.5 with beta 0.25
    e = 0.2
    assert dpo(chosen, rejected, beta=0.25, loss_type="robust", label_smoothing=e).item() == pytest.approx(
        ((1 - e) * softplus(-0.5) - e * softplus(0.5)) / (1 - 2 * e))
    # ipo: per-token means 1/2 - (-1)/4 = 0.75; (0.75 - 1/(2*0.25))^2 = 1.5625
    loss = dpo(chosen, rejected, beta=0.25, loss_type="ipo", chosen_tokens=torch.tensor([2.0]), rejected_tokens=torch.tensor([4.0]))
    assert loss.item() == pytest.approx(1.5625)
    with pytest.raises(ValueError, match="token"):
        dpo(chosen, rejected, loss_type="ipo")
    with pytest.raises(ValueError, match="unknown DPO loss"):
        dpo(chosen, rejected, loss_type="hinge")


def test_kto_by_hand():
    logratios = torch.tensor([2.0, -1.0])
    desirable = torch.tensor([True, False])
    # desirable: 1 - sigmoid(0.5 * (2 - 1)) ; undesirable: 1 - sigmoid(0.5 * (1 - (-1)))
    d, u = 1 - 1 / (1 + math.exp(-0.5)), 1 - 1 / (1 + math.exp(-1.0))
    assert kto(logratios, desirable, 1.0, beta=0.5).item() == pytest.approx((d + u) / 2)
    weighted = kto(logratios, desirable, 1.0, beta=0.5, desirable_weight=2.0, undesirable_weight=0.5)
    assert weighted.item() == pytest.approx((2 * d + 0.5 * u) / 2)
    assert kto(logratios, desirable, 1.0, torch.tensor([1.0, 3.0]), beta=0.5).item() == pytest.approx((d + 3 * u) / 4)


def test_cringe_by_hand_with_k1():
    # vocabulary of 3; the bad token is 0 with logit 2; the best other token has logit 1
    logits = torch.tensor([[[2.0, 1.0, -1.0], [0.0, 3.0, 1.0]]])
    labels = torch.tensor([[0, 1]])  # second token: label 1 (logit 3), best other is token 2 (logit 1)
    mask = torch.tensor([[1, 1]])
    expected = (softplus(2 - 1) + softplus(3 - 1)) / 2  # -log(e^s+ / (e^s+ + e^s_y)) = softplus(s_y - s+)
    assert cringe(logits, labels, mask, k=1).item() == pytest.approx(expected)
    assert cringe(logits, labels, torch.tensor([[1, 0]]), k=1).item() == pytest.approx(softplus(1))


def test_cringe_samples_only_among_the_top_k_other_tokens():
    torch.manual_seed(0)
    logits = torch.tensor([[[5.0, 4.0, 3.0, -50.0]]]).expand(1, 200, 4).contiguous()
    labels = torch.zeros(1, 200, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    loss = cringe(logits, labels, torch.ones(1, 200), k=2, generator=g)
    # s+ is 4 or 3 (never the label's 5 nor the -50): each token's loss is softplus(1) or softplus(2)
    assert softplus(1) < loss.item() < softplus(2)


def test_token_nll_by_hand():
    logits = torch.zeros(1, 2, 4)  # uniform over 4 tokens: -log(1/4) per token
    assert token_nll(logits, torch.tensor([[1, 2]]), torch.tensor([[1, 1]])).item() == pytest.approx(math.log(4))


@pytest.mark.parametrize("name", ["dpo", "kto", "cringe", "nll"])
def test_weights_of_one_give_the_unweighted_loss_and_zero_weight_gives_zero_gradient(name):
    torch.manual_seed(0)
    a = torch.randn(5, requires_grad=True)
    b = torch.randn(5)
    logits = torch.randn(5, 3, 6, requires_grad=True)
    labels, mask = torch.randint(0, 6, (5, 3)), torch.ones(5, 3)

    def loss(w):
        if name == "dpo":
            return dpo(a, b, w, beta=0.3)
        if name == "kto":
            return kto(a, torch.tensor([1, 0, 1, 0, 1]).bool(), 0.2, w, beta=0.3)
        if name == "cringe":
            return cringe(logits, labels, mask, w, k=2, generator=torch.Generator().manual_seed(1))
        return token_nll(logits, labels, mask, w)

    assert loss(torch.ones(5)).item() == pytest.approx(loss(None).item(), rel=1e-6)
    w = torch.tensor([1.0, 0.0, 2.0, 1.0, 0.5])
    loss(w).backward()
    grad = a.grad if name in ("dpo", "kto") else logits.grad
    assert torch.all(grad[1] == 0) and grad[0].abs().sum() > 0


def test_completion_logps_by_hand():
    ids, mask, comp = batch_sequences([[1, 2]], [[3]], pad_id=0)  # prompt 1 2, completion 3
    assert comp.tolist() == [[0, 0, 1]]
    logits = torch.zeros(1, 3, 4)
    logits[0, 1, 3] = math.log(3)  # at position 1 the next token 3 has probability 3/6
    assert token_logps(logits, ids)[0, 1].item() == pytest.approx(math.log(0.5))
    assert completion_logps(logits, ids, comp).item() == pytest.approx(math.log(0.5))


# ---- TRL equivalence ---------------------------------------------------------------------------


def _tiny_lm():
    from transformers import AutoModelForCausalLM

    from rlhf_organic.models.tiny import tiny_config, train_tokenizer

    texts = ["the reply was good and kind", "the reply was rude", "what a helpful answer", "no idea, go away",
             "tell me about cooking", "tell me about the sea"] * 5
    tokenizer = train_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config("decoder", len(tokenizer))), tokenizer


def _perturb_lora(model):
    """LoRA starts as the identity (B = 0): make the policy differ from the reference."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)


def _logps(model, batch, reference: bool):
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if reference:
        with torch.no_grad(), model.disable_adapter():
            logits = model(input_ids=ids, attention_mask=mask).logits
    else:
        logits = model(input_ids=ids, attention_mask=mask).logits
    return completion_logps(logits, ids, batch["completion_mask"])


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "robust"])
def test_dpo_loss_equals_trl_dpo_trainer_loss_on_the_same_batch(tmp_path, loss_type):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = _tiny_lm()
    data = Dataset.from_dict({"prompt": ["tell me about cooking", "tell me about the sea"] * 2,
                              "chosen": [" what a helpful answer", " the reply was good and kind"] * 2,
                              "rejected": [" no idea, go away", " the reply was rude"] * 2})
    smoothing = 0.1 if loss_type == "robust" else 0.0
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, use_cpu=True, bf16=False, report_to=[],
                     gradient_checkpointing=False, beta=0.3, loss_type=[loss_type], label_smoothing=smoothing)
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                         peft_config=LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    _perturb_lora(trainer.model)
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss = trainer.compute_loss(trainer.model, dict(batch))
    logps, ref = _logps(trainer.model, batch, False), _logps(trainer.model, batch, True)
    (pc, pr), (rc, rr) = logps.chunk(2), ref.chunk(2)
    tokens = batch["completion_mask"].sum(1).float().chunk(2)
    ours = dpo(pc - rc, pr - rr, torch.ones(len(pc)), beta=0.3, loss_type=loss_type, label_smoothing=smoothing,
               chosen_tokens=tokens[0], rejected_tokens=tokens[1])
    assert (pc - rc).abs().sum() > 0.01  # the policy really differs from the reference
    assert ours.item() == pytest.approx(trl_loss.item(), rel=1e-5)


def test_kto_loss_equals_trl_kto_trainer_loss_on_the_same_batch(tmp_path):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import KTOConfig, KTOTrainer

    model, tokenizer = _tiny_lm()
    data = Dataset.from_dict({"prompt": ["tell me about cooking", "tell me about the sea"] * 3,
                              "completion": [" what a helpful answer", " the reply was rude", " no idea, go away",
                                             " the reply was good and kind", " what a helpful answer", " go away"],
                              "label": [True, False, False, True, True, False]})
    args = KTOConfig(output_dir=str(tmp_path), per_device_train_batch_size=6, use_cpu=True, bf16=False, report_to=[],
                     gradient_checkpointing=False, beta=0.3, desirable_weight=1.0, undesirable_weight=1.5)
    trainer = KTOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                         peft_config=LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    _perturb_lora(trainer.model)
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss = trainer.compute_loss(trainer.model, dict(batch))
    with torch.no_grad():
        kl_batch = {"input_ids": batch["KL_input_ids"], "attention_mask": batch["KL_attention_mask"],
                    "completion_mask": batch["KL_completion_mask"]}
        kl = (_logps(trainer.model, kl_batch, False) - _logps(trainer.model, kl_batch, True)).mean().clamp(min=0)
    logratios = _logps(trainer.model, batch, False) - _logps(trainer.model, batch, True)
    ours = kto(logratios, batch["label"].bool(), kl, torch.ones(len(logratios)), beta=0.3,
               desirable_weight=1.0, undesirable_weight=1.5)
    assert logratios.abs().sum() > 0.01
    assert ours.item() == pytest.approx(trl_loss.item(), rel=1e-5)


# ---- PPO ------------------------------------------------------------------------------------------


def test_gae_on_a_three_step_example_by_hand():
    from rlhf_organic.losses import gae

    # row 0: 3 tokens, gamma 1, lambda 0.95. delta_2 = 1 - 0.7 = 0.3; delta_1 = 0.7 - 0.6 = 0.1;
    # delta_0 = 0.6 - 0.5 = 0.1. A_2 = 0.3, A_1 = 0.1 + 0.95 * 0.3 = 0.385, A_0 = 0.1 + 0.95 * 0.385 = 0.46575
    # row 1: 2 tokens then padding (its value 9 must not leak in). delta_1 = 2 - 0.5 = 1.5; A_0 = (0 + 0.5 - 1) + 0.95 * 1.5
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 0.5, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    assert torch.allclose(adv, torch.tensor([[0.46575, 0.385, 0.3], [0.925, 1.5, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[0.96575, 0.985, 1.0], [1.925, 2.0, 0.0]]))
    # gamma 0.9, lambda 0.8 on row 0: delta_2 = 0.3, delta_1 = 0.9*0.7 - 0.6 = 0.03, delta_0 = 0.9*0.6 - 0.5 = 0.04
    adv, _ = gae(rewards[:1], values[:1], mask[:1], gamma=0.9, lam=0.8)
    a1 = 0.03 + 0.72 * 0.3
    assert torch.allclose(adv, torch.tensor([[0.04 + 0.72 * a1, a1, 0.3]]))


def test_clipped_surrogate_by_hand():
    from rlhf_organic.losses import ppo_policy_loss

    logps = torch.tensor([[0.5, -0.5, 0.5]])
    old = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    loss, stats = ppo_policy_loss(logps, old, adv, torch.ones(1, 3), cliprange=0.2)
    # ratio e^0.5 with A=1: clipped at 1.2 -> -1.2; ratio e^-0.5 with A=1: unclipped -e^-0.5 is larger;
    # ratio e^0.5 with A=-2: unclipped 2 e^0.5 is larger (clipping never helps a bad action)
    expected = (-1.2 - math.exp(-0.5) + 2 * math.exp(0.5)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats["clipfrac"] == pytest.approx(1 / 3)
    assert stats["approx_kl"] == pytest.approx(0.125)
    # at ratio 1 the loss is -mean(A) and its gradient -A / n per token; a masked token counts for nothing
    logps = torch.zeros(1, 3, requires_grad=True)
    loss, stats = ppo_policy_loss(logps, old, adv, torch.tensor([[1, 1, 0]]))
    loss.backward()
    assert loss.item() == pytest.approx(-1.0) and stats["ratio"] == 1 and stats["approx_kl"] == 0
    assert torch.allclose(logps.grad, torch.tensor([[-0.5, -0.5, 0.0]]))


def test_value_clipping_by_hand():
    from rlhf_organic.losses import ppo_value_loss

    # old 0, return 1, clip 0.2: V=0.5 -> clipped 0.2, max(0.25, 0.64) = 0.64; V=-0.5 -> -0.2, max(2.25, 1.44) = 2.25
    loss, stats = ppo_value_loss(torch.tensor([[0.5, -0.5]]), torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2), 0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 2.25) / 2)
    assert stats["value_clipfrac"] == pytest.approx(0.5)


def test_token_rewards_and_whitening_by_hand():
    from rlhf_organic.losses import token_rewards, whiten

    logps = torch.tensor([[-1.0, -2.0, -1.0], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -1.0], [-2.0, -1.0, -7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rewards, kl = token_rewards(torch.tensor([2.0, -1.0]), logps, ref, mask, kl_coef=0.1)
    assert torch.allclose(kl, torch.tensor([[0.5, -1.0, 0.0], [1.0, 0.0, 0.0]]))
    # -0.1 * kl per token, the score added at each row's last real token
    assert torch.allclose(rewards, torch.tensor([[-0.05, 0.1, 2.0], [-0.1, -1.0, 0.0]]))
    white = whiten(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]]), mask)
    expected = (torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]) - 3) / math.sqrt(2.0)
    assert torch.allclose(white[mask.bool()], expected, atol=1e-6) and white[1, 2] == 0


def test_selective_logps_equals_log_softmax_gather_with_the_same_gradient(monkeypatch):
    """Chunked, float32, recomputed in backward: the same values and gradients as the plain computation."""
    from rlhf_organic.policy import model as policy_model
    from rlhf_organic.policy.model import selective_logps

    monkeypatch.setattr(policy_model, "CHUNK_ELEMENTS", 2 * 5 * 11)  # two rows per chunk: several chunks
    torch.manual_seed(0)
    logits = (torch.randn(5, 7, 11) * 3).requires_grad_(True)
    targets = torch.randint(0, 11, (5, 7))
    plain = torch.log_softmax(logits / 0.7, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    (grad_plain,) = torch.autograd.grad(plain.sum(), logits)
    ours = selective_logps(logits, targets, temperature=0.7)
    (grad_ours,) = torch.autograd.grad(ours.sum(), logits)
    assert torch.allclose(ours, plain, atol=1e-6) and torch.allclose(grad_ours, grad_plain, atol=1e-6)
    low = logits.detach().to(torch.bfloat16)
    assert selective_logps(low, targets).dtype == torch.float32


def test_completion_window_covers_every_completion_token_and_no_more():
    from rlhf_organic.policy.model import completion_window
    from rlhf_organic.sequences import batch_sequences

    _, _, comp = batch_sequences([[1, 2, 3, 4], [1, 2]], [[5, 6], [7, 8, 9]], pad_id=0)
    # row 0 completes at positions 4-5, row 1 at 2-4: predicted by columns 3-4 and 1-3
    assert completion_window(comp) == (1, 5)


@pytest.mark.parametrize("name", ["dpo", "kto", "cringe", "nll", "token_mean", "pointwise", "bradley_terry", "reasons", "ppo"])
def test_parts_divided_by_the_whole_total_add_up_to_the_whole_loss_and_gradient(name):
    """What the micro-batched loop relies on: a batch split in two, each part divided by the whole batch's
    total (``total=``), gives the loss and the gradient of the unsplit batch, weights of 0 included."""
    from rlhf_organic.losses import bradley_terry, masked_mean, pointwise_bce, ppo_policy_loss, reason_bce, token_mean, token_weight_sum

    torch.manual_seed(0)
    a = torch.randn(6, requires_grad=True)
    b = torch.randn(6)
    logits = torch.randn(6, 4, 7, requires_grad=True)
    labels = torch.randint(0, 7, (6, 4))
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]])
    w = torch.tensor([1.0, 0.0, 2.0, 1.0, 0.5, 3.0])
    tokens_w = token_weight_sum(mask.sum(1).numpy(), w.numpy())

    def loss(rows, total=None):
        if name == "dpo":
            return dpo(a[rows], b[rows], w[rows], beta=0.3, total=total)
        if name == "kto":
            return kto(a[rows], torch.tensor([1, 0, 1, 0, 1, 1]).bool()[rows], 0.2, w[rows], beta=0.3, total=total)
        if name == "cringe":  # k=1: the positive token is not sampled, so the split draws the same
            return cringe(logits[rows], labels[rows], mask[rows], w[rows], k=1, total=total)
        if name == "nll":
            return token_nll(logits[rows], labels[rows], mask[rows], w[rows], total=total)
        if name == "token_mean":
            return token_mean(logits[rows, :, 0], mask[rows], w[rows], total=total)
        if name == "pointwise":
            return pointwise_bce(a[rows], (b[rows] > 0).float(), w[rows], total=total)
        if name == "bradley_terry":
            return bradley_terry(a[rows], b[rows], w[rows], 0.1, total=total)
        if name == "reasons":
            return reason_bce(logits[rows, 0], (logits[rows, 1] > 0).float().detach(), w[rows], total=total)
        return ppo_policy_loss(logits[rows, :, 0], logits[rows, :, 1].detach(), logits[rows, :, 2].detach(), mask[rows],
                               0.2, total=total)[0] + masked_mean(a[rows, None].expand(-1, 4), mask[rows], total)

    rows = torch.arange(6)
    first, second = rows[:2], rows[2:]
    whole = loss(rows)
    if name in ("dpo", "kto", "pointwise", "bradley_terry", "reasons"):
        total = float(w.sum())
    elif name == "ppo":
        total = float(mask.sum())
    else:
        total = tokens_w
    split = loss(first, total) + loss(second, total)
    assert split.item() == pytest.approx(whole.item(), rel=1e-6, abs=1e-6)
    grads = torch.autograd.grad(whole, [a, logits], allow_unused=True, materialize_grads=True)
    split_grads = torch.autograd.grad(loss(first, total) + loss(second, total), [a, logits], allow_unused=True,
                                      materialize_grads=True)
    for g, h in zip(grads, split_grads):
        torch.testing.assert_close(h, g, rtol=1e-5, atol=1e-7)


def test_robust_dpo_takes_one_flip_rate_per_pair():
    chosen, rejected = torch.tensor([1.0, -2.0]), torch.tensor([0.0, 0.0])
    rates = torch.tensor([0.0, 0.2])
    per_pair = [dpo(chosen[i:i + 1], rejected[i:i + 1], beta=0.5, loss_type="robust", label_smoothing=float(rates[i])).item()
                for i in range(2)]
    together = dpo(chosen, rejected, beta=0.5, loss_type="robust", label_smoothing=rates).item()
    assert together == pytest.approx(sum(per_pair) / 2)
    assert per_pair[0] == pytest.approx(math.log(1 + math.exp(-0.5)))  # rate 0: plain DPO
