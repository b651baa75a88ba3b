"""The NaN gradients of KTO, the reward model and rejection sampling on a 0.8B model (issue 19), on CPU, fast.

Mechanism: a freshly initialised model's pad row of the embedding is all zeros; with SmolLM2's tokenizer
the pad token is also EOS and ends every chat turn. A prompt cut from the left could start with it. At
position 0 that token attends only to itself, so its hidden state stays exactly zero in every layer, where
RMSNorm's derivative is 1/sqrt(eps): the gradient flowing back into that position grows by orders of
magnitude per layer, overflows to inf in a deep model and becomes NaN (inf x 0) in the LoRA gradients.
Depth, not width, decides it: a 32-layer model 64 wide shows it in a second. Fix: ``sequences.cut_left``
keeps a sequence's first token. The realistic-size check is ``pytest -m slow tests/test_nan_mechanism.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_organic.sequences import cut_left

# turns end with EOS, as in SmolLM2's template ("<|im_end|>" is its EOS and pad)
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
WORDS = "the cat sat on a mat and then it ran off to see the dog who was not at home today".split()


@pytest.fixture(scope="module")
def deep_base(tmp_path_factory):
    """A random-init Llama, 32 layers of width 64, whose pad (= EOS) embedding row is zero."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhf_organic.models.tiny import train_tokenizer

    folder = tmp_path_factory.mktemp("deep")
    tokenizer = train_tokenizer([" ".join(WORDS)] * 20, vocab_size=300)
    tokenizer.chat_template = TEMPLATE
    tokenizer.pad_token = tokenizer.eos_token
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=32,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=tokenizer.eos_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    assert model.model.embed_tokens.weight[tokenizer.eos_token_id].abs().sum() == 0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _policy(folder):
    from rlhf_organic.policy.config import PolicySection
    from rlhf_organic.policy.model import build_policy

    policy = build_policy(str(folder), PolicySection().lora, log=lambda m: None)
    with torch.no_grad():  # an adapter a few steps into training: B no longer zero
        for name, p in policy.peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    return policy


def _grad_norm(policy, prompt, completion) -> float:
    policy.peft.zero_grad(set_to_none=True)
    policy.sequence_logps([prompt], [completion]).sum().backward()
    return math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in policy.trainable_parameters() if p.grad is not None))


def _long_context(turns: int = 6):
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": " ".join(WORDS[i:] + WORDS[:i])} for i in range(turns)]


def _cut_at_eos(ids: list[int], eos: int) -> int:
    """A prompt length whose plain left cut (ids[-n:]) starts with EOS, as a real dataset's prompts sometimes do."""
    return next(len(ids) - i for i in range(1, len(ids)) if ids[i] == eos)


def test_cut_left_keeps_the_first_token():
    assert cut_left([1, 2, 3, 4, 5], 3) == [1, 4, 5]
    assert cut_left([1, 2, 3], 3) == [1, 2, 3]
    assert cut_left([1, 2, 3], 5) == [1, 2, 3]
    assert cut_left([7, 8, 9], 2) == [7, 9]
    with pytest.raises(ValueError):
        cut_left([1, 2, 3], 1)


def test_a_zero_embedding_first_token_makes_lora_gradients_nan(deep_base):
    """The mechanism itself: the same tokens, once led by the zero-embedding token, once not."""
    policy = _policy(deep_base)
    eos = policy.tokenizer.eos_token_id
    body = policy.tokenizer(" ".join(WORDS), add_special_tokens=False)["input_ids"]
    assert math.isfinite(_grad_norm(policy, body[:8], body[8:] + [eos]))
    assert math.isnan(_grad_norm(policy, [eos] + body[:8], body[8:] + [eos]))


def test_policy_prompts_cut_from_the_left_keep_their_start_and_train_finitely(deep_base):
    from rlhf_organic.policy.model import encode_prompts
    from rlhf_organic.sequences import prompt_text

    policy = _policy(deep_base)
    tok, eos = policy.tokenizer, policy.tokenizer.eos_token_id
    context = _long_context()
    full = tok(prompt_text(tok, context), add_special_tokens=False)["input_ids"]
    n = _cut_at_eos(full, eos)
    assert full[-n:][0] == eos  # what a plain left cut gave: NaN below
    (prompt,) = encode_prompts(tok, [context], n)
    assert len(prompt) == n and prompt[0] == full[0] and prompt[1:] == full[-(n - 1):]
    completion = tok("the dog ran", add_special_tokens=False)["input_ids"] + [eos]
    assert math.isnan(_grad_norm(policy, full[-n:], completion))
    assert math.isfinite(_grad_norm(policy, prompt, completion))


def test_reward_sequences_cut_from_the_left_keep_their_start(deep_base):
    from transformers import AutoTokenizer

    from rlhf_organic.reward.model import encode
    from rlhf_organic.sequences import format_dialogue

    tok = AutoTokenizer.from_pretrained(deep_base)
    context = _long_context()
    full = tok(format_dialogue(tok, context, "the dog ran"), add_special_tokens=True)["input_ids"]
    n = _cut_at_eos(full, tok.eos_token_id)
    (ids,) = encode(tok, [context], ["the dog ran"], n)
    assert ids == [full[0]] + full[-(n - 1):]
    assert ids[0] != tok.eos_token_id


@pytest.mark.slow
def test_realistic_size_trains_finitely_with_cut_prompts(tmp_path):
    """The 0.8B shape of the first GPU check (16 layers, 2048 wide), on CPU in float32: the old cut's NaN,
    and the new cut's finite gradient, in one forward and backward each (about a minute)."""
    from rlhf_organic.models.random_init import save_random_llama
    from rlhf_organic.models.tiny import train_tokenizer
    from rlhf_organic.policy.model import encode_prompts
    from rlhf_organic.sequences import prompt_text

    tokenizer = train_tokenizer([" ".join(WORDS)] * 20, vocab_size=300)
    tokenizer.chat_template = TEMPLATE
    tokenizer.pad_token = tokenizer.eos_token
    save_random_llama(tmp_path / "m", tokenizer, "0.8b", dtype="float32", device="cpu")
    policy = _policy(tmp_path / "m")
    eos = tokenizer.eos_token_id
    context = _long_context()
    full = tokenizer(prompt_text(tokenizer, context), add_special_tokens=False)["input_ids"]
    n = _cut_at_eos(full, eos)
    completion = tokenizer("the dog ran", add_special_tokens=False)["input_ids"] + [eos]
    assert not math.isfinite(_grad_norm(policy, full[-n:], completion))
    assert math.isfinite(_grad_norm(policy, encode_prompts(tokenizer, [context], n)[0], completion))
