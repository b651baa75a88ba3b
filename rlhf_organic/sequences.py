"""Sequences shared by the reward model, the policy and the judge: dialogue formatting (the text a
model reads), cutting token sequences to length, padding them into a batch, and the held-out split
of conversations that keeps evaluation out of training.

Every caller pads through here, so the rules are written once:

- forward passes (reward scoring and training, policy log-probabilities) pad on the right
  (``pad_right``, ``batch_sequences``): positions start at 0 in every row, the same in training,
  reference and evaluation passes;
- generation pads prompts on the left (``pad_left``): a decoder continues from the last position.

Ids and masks are ``torch.long``; torch is imported on first use, so the split and the formatting
stay light.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from .models.tiny import CHAT_TEMPLATE

if TYPE_CHECKING:
    import pandas as pd
    import torch


# ---- dialogue formatting ----------------------------------------------------------------------


def chat_messages(context) -> list[dict[str, str]]:
    """The turns of ``context`` (None for none) as ``{"role", "content"}`` string pairs."""
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in (context if context is not None else [])]


def apply_chat(tokenizer, messages: list[dict[str, str]], *, add_generation_prompt: bool = False) -> str:
    """``messages`` in the tokenizer's chat format, or in the role-tagged default (``models.tiny.CHAT_TEMPLATE``)
    when it has none or its template rejects the turns: organic contexts can open with the bot, or hold
    two user turns in a row, which templates insisting on user/assistant alternation refuse."""
    if tokenizer.chat_template:
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        except Exception:  # noqa: BLE001 - any template error: fall back below
            pass
    return tokenizer.apply_chat_template(messages, chat_template=CHAT_TEMPLATE, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def format_dialogue(tokenizer, context, response: str) -> str:
    """The text a reward model (or the judge) reads: the context turns and the response, in the base's chat format."""
    return apply_chat(tokenizer, [*chat_messages(context), {"role": "assistant", "content": response}])


def prompt_text(tokenizer, context) -> str:
    """The context as a generation prompt in the base's chat format (the policy continues from it)."""
    return apply_chat(tokenizer, chat_messages(context), add_generation_prompt=True)


# ---- token sequences ----------------------------------------------------------------------------


def cut_left(ids: list[int], max_length: int) -> list[int]:
    """At most ``max_length`` tokens of ``ids``: its first token, then as many of its last tokens as fit.

    Long dialogues lose their oldest turns, but never their first token (BOS, or the chat format's
    opening marker). A sequence cut to start mid-dialogue can start with any token, and a token whose
    embedding is all zeros there (the pad / EOS row of a freshly initialised model, rows added to a
    vocabulary) breaks training: at position 0 it attends only to itself, so its hidden state stays
    exactly zero through every layer, where RMSNorm's derivative is 1/sqrt(eps) (1,000 at eps 1e-6).
    The gradient flowing back into that position then grows about a thousandfold per layer, overflows
    to inf in a 16-layer model and becomes NaN (inf x 0) in every LoRA gradient: the NaN gradient norms
    of KTO, the reward model and rejection sampling on a 0.8B model (tests/test_nan_mechanism.py).
    Pretrained models also expect their usual first token there (it acts as an attention sink).
    """
    if len(ids) <= max_length:
        return list(ids)
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 to keep a sequence's first token, got {max_length}")
    return list(ids[:1]) + list(ids[len(ids) - (max_length - 1):])


def _pad(sequences: list[list[int]], pad_id: int, device, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, s in enumerate(sequences):
        where = slice(width - len(s), width) if left else slice(0, len(s))
        ids[row, where] = torch.tensor(s, dtype=torch.long)
        mask[row, where] = 1
    return ids.to(device), mask.to(device)


def pad_right(sequences: list[list[int]], pad_id: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both ``long`` [len(sequences), longest], padded on the right."""
    return _pad(sequences, pad_id, device, left=False)


def pad_left(sequences: list[list[int]], pad_id: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both ``long`` [len(sequences), longest], padded on the left (generation)."""
    return _pad(sequences, pad_id, device, left=True)


def batch_sequences(prompts: list[list[int]], completions: list[list[int]], pad_id: int, device="cpu"):
    """Right-padded (input_ids, attention_mask, completion_mask), all ``long``, of prompt + completion rows;
    the completion mask is 1 on each row's completion tokens."""
    import torch

    ids, mask = pad_right([p + c for p, c in zip(prompts, completions)], pad_id)
    completion = torch.zeros_like(mask)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        completion[i, len(p): len(p) + len(c)] = 1
    return ids.to(device), mask.to(device), completion.to(device)


# ---- the held-out split -------------------------------------------------------------------------


def held_out(ids: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """True for the ids in the evaluation split: a stable hash of (seed, id) below ``fraction``.

    Whole conversations (or whole A/B choices) are held out, chosen by a seeded hash of their id, so the
    split does not move when other rows are added, and the reward model, the judge, the tiny base and the
    policy's evaluation all hold out the same ones for the same seed and fraction.
    """
    if fraction <= 0:
        return np.zeros(len(ids), bool)
    salt = str(seed).encode()
    unit = np.array(
        [int.from_bytes(hashlib.blake2b(salt + str(i).encode(), digest_size=8).digest(), "big") / 2**64 for i in ids]
    )
    return unit < fraction
