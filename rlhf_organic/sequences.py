"""Token sequences shared by the reward model and the policy."""

from __future__ import annotations


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
