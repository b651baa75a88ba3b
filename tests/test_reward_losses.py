"""The weighted losses against hand-computed values, the weighting identities, and TRL's reward loss."""

import math

import pytest
import torch

from rlhf_organic.losses import bradley_terry, pointwise_bce, reason_bce, weighted_mean

LN2, LN4 = math.log(2), math.log(4)


def test_pointwise_bce_by_hand():
    scores = torch.tensor([0.0, math.log(3)])  # sigmoid: 0.5 and 0.75
    labels = torch.tensor([1.0, 0.0])
    # -log(0.5) = ln 2; -log(1 - 0.75) = ln 4
    assert pointwise_bce(scores, labels).item() == pytest.approx((LN2 + LN4) / 2)
    assert pointwise_bce(scores, labels, torch.tensor([1.0, 3.0])).item() == pytest.approx((LN2 + 3 * LN4) / 4)


def test_bradley_terry_by_hand():
    chosen, rejected = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    soft1 = math.log(1 + math.exp(-1))  # -logsigmoid(1)
    assert bradley_terry(chosen, rejected).item() == pytest.approx((soft1 + LN2) / 2)
    assert bradley_terry(chosen, rejected, torch.tensor([2.0, 0.0])).item() == pytest.approx(soft1)
    # margin 1: differences become 0 and -1
    assert bradley_terry(chosen, rejected, margin=1.0).item() == pytest.approx((LN2 + math.log(1 + math.e)) / 2)


def test_reason_bce_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    first, second = LN2, (LN4 + LN2) / 2
    assert reason_bce(logits, targets).item() == pytest.approx((first + second) / 2)
    assert reason_bce(logits, targets, torch.tensor([0.0, 1.0])).item() == pytest.approx(second)


@pytest.mark.parametrize("loss", ["pointwise", "pairwise"])
def test_weights_of_one_give_the_unweighted_loss(loss):
    torch.manual_seed(0)
    a, b = torch.randn(7), torch.randn(7)
    labels = (torch.rand(7) > 0.5).float()
    ones = torch.ones(7)
    if loss == "pointwise":
        assert torch.allclose(pointwise_bce(a, labels, ones), torch.nn.functional.binary_cross_entropy_with_logits(a, labels))
    else:
        assert torch.allclose(bradley_terry(a, b, ones), -torch.nn.functional.logsigmoid(a - b).mean())


def test_weight_zero_gives_zero_gradient_even_for_infinite_values():
    scores = torch.tensor([0.3, -1.2, 2.0], requires_grad=True)
    rejected = torch.tensor([0.0, float("inf"), 0.0])  # the weight-0 pair is broken: it must not matter
    loss = bradley_terry(scores, rejected, torch.tensor([1.0, 0.0, 2.0]))
    loss.backward()
    assert torch.isfinite(loss)
    assert scores.grad[1] == 0 and scores.grad[0] != 0 and scores.grad[2] != 0
    # and the loss equals the one computed without that example
    expected = bradley_terry(scores[[0, 2]].detach(), rejected[[0, 2]], torch.tensor([1.0, 2.0]))
    assert loss.item() == pytest.approx(expected.item())


def test_all_weights_zero_is_zero_loss_with_a_graph():
    scores = torch.tensor([0.5, 1.0], requires_grad=True)
    loss = pointwise_bce(scores, torch.tensor([1.0, 0.0]), torch.zeros(2))
    loss.backward()
    assert loss.item() == 0 and torch.equal(scores.grad, torch.zeros(2))
    assert weighted_mean(torch.tensor([3.0, 5.0])).item() == 4.0


def test_pairwise_loss_equals_trl_reward_trainer_loss_on_the_same_batch(tmp_path):
    """With all weights 1, our Bradley-Terry loss on the model's scores is TRL RewardTrainer's loss."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from rlhf_organic.models.tiny import tiny_config, train_tokenizer

    texts = ["the reply was good and kind", "the reply was rude", "what a helpful answer", "no idea, go away"] * 5
    tokenizer = train_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    config = tiny_config("decoder", len(tokenizer))
    config.num_labels = 1
    model = AutoModelForSequenceClassification.from_config(config)
    pairs = Dataset.from_dict({"chosen": texts[0::2][:6], "rejected": texts[1::2][:6]})
    args = RewardConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, use_cpu=True, bf16=False,
                        report_to=[], gradient_checkpointing=False, max_length=32)
    trainer = RewardTrainer(model=model, args=args, train_dataset=pairs, processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss = trainer.compute_loss(model, dict(batch))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    chosen, rejected = logits.chunk(2)
    ours = bradley_terry(chosen, rejected, torch.ones(len(chosen)))
    assert ours.item() == pytest.approx(trl_loss.item(), rel=1e-6)


def test_unbiased_losses_with_per_example_flip_rates_by_hand():
    """Each label's own flip rate e: ((1 - e) loss(label) - e loss(flipped)) / (1 - 2e); e = 0 is the plain loss."""
    scores, labels = torch.tensor([0.0, math.log(3)]), torch.tensor([1.0, 0.0])
    flip = torch.tensor([0.0, 0.25])
    # second: loss(label 0) = ln 4, loss(label 1) = -log 0.75; (0.75 ln 4 - 0.25 (-log 0.75)) / 0.5
    second = (0.75 * LN4 - 0.25 * -math.log(0.75)) / 0.5
    assert pointwise_bce(scores, labels, flip=flip).item() == pytest.approx((LN2 + second) / 2)
    assert pointwise_bce(scores, labels, flip=torch.zeros(2)).item() == pytest.approx(pointwise_bce(scores, labels).item())

    chosen, rejected = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    soft1, soft_minus1 = math.log(1 + math.exp(-1)), math.log(1 + math.e)  # -logsigmoid(1), -logsigmoid(-1)
    first = (0.9 * soft1 - 0.1 * soft_minus1) / 0.8
    assert bradley_terry(chosen, rejected, flip=torch.tensor([0.1, 0.3])).item() == pytest.approx((first + LN2) / 2)
    assert bradley_terry(chosen, rejected, flip=0.0).item() == pytest.approx(bradley_terry(chosen, rejected).item())


def test_unbiased_loss_has_the_clean_expectation_and_refuses_rates_of_one_half():
    """Averaged over the noise (label kept with 1 - e, flipped with e), the unbiased loss is the clean loss."""
    chosen, rejected, e = torch.tensor([0.7]), torch.tensor([-0.4]), 0.2
    kept = bradley_terry(chosen, rejected, flip=e)
    swapped = bradley_terry(rejected, chosen, flip=e)
    assert ((1 - e) * kept + e * swapped).item() == pytest.approx(bradley_terry(chosen, rejected).item())
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        bradley_terry(chosen, rejected, flip=torch.tensor([0.5]))
