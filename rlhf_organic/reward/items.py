"""From reward data to what the reward model trains on: tokenised ``Items`` (``make_items``), and the texts
a tiny base's tokenizer is trained on (``tokenizer_texts``). Shared by the reward stage and the clean judge."""

from __future__ import annotations

import numpy as np

from .data import RewardData, reason_targets
from .model import encode
from .spec import RewardSpec
from .train import Items

TOKENIZER_TEXTS = 50_000  # texts a tiny base's tokenizer is trained on, at most


def make_items(tokenizer, data: RewardData, spec: RewardSpec, reasons: list[str]) -> Items:
    """``data``'s thumbs and A/B choices tokenised (``model.encode``) with their labels, weights and reason targets."""
    point, pairs = data.point, data.pairs
    items = Items(
        point_ids=encode(tokenizer, point["context"], point["response"], spec.max_length) if len(point) else [],
        point_label=point["label"].to_numpy(np.float32),
        point_weight=point["weight"].to_numpy(np.float64),
        chosen_ids=encode(tokenizer, pairs["context"], pairs["chosen"], spec.max_length) if len(pairs) else [],
        rejected_ids=encode(tokenizer, pairs["context"], pairs["rejected"], spec.max_length) if len(pairs) else [],
        pair_weight=pairs["weight"].to_numpy(np.float64),
        point_flip=point["flip"].to_numpy(np.float64) if "flip" in point else None,
        pair_flip=pairs["flip"].to_numpy(np.float64) if "flip" in pairs else None,
    )
    if reasons:
        items.point_reasons, items.point_has_reason = reason_targets(point, reasons)
    return items


def tokenizer_texts(data: RewardData, seed: int) -> list[str]:
    """Replies and context turns of ``data``, at most ``TOKENIZER_TEXTS`` of them (a seeded sample)."""
    texts = list(data.point["response"]) + list(data.pairs["chosen"]) + list(data.pairs["rejected"])
    for context in list(data.point["context"]) + list(data.pairs["context"]):
        texts.extend(str(m["content"]) for m in (context if context is not None else []))
    if len(texts) > TOKENIZER_TEXTS:
        keep = np.random.default_rng(seed).choice(len(texts), TOKENIZER_TEXTS, replace=False)
        texts = [texts[i] for i in keep]
    return texts
