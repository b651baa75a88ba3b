"""Trust-weighted DPO.

Pairs come from (a) explicit A/B choices, (b) a liked and a disliked reply to the same context, and
(c) on-policy pairs: ``n`` replies sampled per context from the policy, scored by the reward model,
best against worst. A pair's weight is its chooser's trust for (a), the smaller of the two thumbs'
weights for (b) (a pair is as trustworthy as its least trusted label), and the trust of the user whose
context it is for (c). The reference is the base with the adapter switched off; with
``precompute_ref`` its log-probs are computed once before training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from ...contracts import MethodContract
from ...section import Section

if TYPE_CHECKING:
    from ..train import MethodRun

DESCRIPTION = "direct preference optimisation on A/B choices, same-context thumbs and on-policy pairs"


class OnPolicy(Section):
    contexts: int = Field(0, ge=0, description="training contexts to sample pairs for (0: none); needs a reward model")
    n: int = Field(4, ge=2, description="replies sampled per context; the best and worst make a pair")
    min_gap: float = Field(0.0, ge=0, description="skip a context whose best and worst scores differ by less")


class Config(Section):
    beta: float = Field(0.1, gt=0)
    loss: Literal["sigmoid", "ipo", "robust"] = Field("sigmoid", description="sigmoid (DPO / cDPO), ipo, robust (rDPO)")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="assumed label-flip rate (sigmoid, robust)")
    flip_rates: bool = Field(False, description=(
        "robust loss only: each pair's own flip rate instead of label_smoothing, from its user's label-flip rate "
        "estimated by the trust stage (flip_rate in the trust folder); a thumbs pair is wrong when either label flipped"))
    pairs: list[Literal["preferences", "thumbs"]] = Field(
        ["preferences", "thumbs"], description="preferences: A/B choices; thumbs: liked vs disliked reply to one context"
    )
    max_pairs_per_context: int = Field(4, ge=1, description="thumbs pairs built per context, at most")
    on_policy: OnPolicy = OnPolicy()
    precompute_ref: bool = Field(True, description="reference log-probs once before training, not every step")

    @model_validator(mode="after")
    def _has_pairs(self) -> Config:
        if not self.pairs and self.on_policy.contexts == 0:
            raise ValueError("no pair source: set pairs or on_policy.contexts")
        if self.flip_rates and self.loss != "robust":
            raise ValueError(f"flip_rates corrects the robust loss (rDPO) for each pair's flip rate; set loss: robust (got {self.loss})")
        return self


def thumbs_pairs(point: pd.DataFrame, per_context: int, rng: np.random.Generator) -> pd.DataFrame:
    """Liked vs disliked replies to the same context, at most ``per_context`` pairs per context."""
    columns = ["context", "chosen", "rejected", "weight", "user_id", "source", "flip"]
    if len(point) == 0:
        return pd.DataFrame(columns=columns)
    frame = point.assign(key=point["context"].map(context_key))
    rows = []
    for _, group in frame.groupby("key", sort=False):
        liked, disliked = group[group["label"] > 0], group[group["label"] <= 0]
        combos = [(a, b) for a in range(len(liked)) for b in range(len(disliked))
                  if liked["response"].iloc[a] != disliked["response"].iloc[b]]
        if not combos:
            continue
        for i in rng.permutation(len(combos))[:per_context]:
            a, b = liked.iloc[combos[i][0]], disliked.iloc[combos[i][1]]
            rows.append((a["context"], a["response"], b["response"], min(a["weight"], b["weight"]), a["user_id"], "thumbs",
                         either_flipped(a.get("flip", 0.0), b.get("flip", 0.0))))
    return pd.DataFrame(rows, columns=columns)


def either_flipped(a: float, b: float) -> float:
    """A thumbs pair's flip rate: the chance that either of its labels flipped (then the pair is wrong or says
    nothing), capped as a user's rate is (``trust/flips.py``)."""
    from ...trust.flips import CAP

    return min(CAP, a + b - a * b)


def context_key(context) -> str:
    """A key per distinct context: its turns' roles and texts."""
    return "\x1e".join(f"{m['role']}\x1f{m['content']}" for m in (context if context is not None else []))


def on_policy_pairs(run: MethodRun, contexts: pd.DataFrame) -> pd.DataFrame:
    """Best vs worst of ``n`` sampled replies per context, by the reward model's score."""
    cfg = run.config.on_policy
    samples = run.sample(list(contexts["context"]), cfg.n, "dpo on-policy samples")
    rows = []
    for (_, row), replies in zip(contexts.iterrows(), samples):
        scores = run.policy.reward_scores([row["context"]] * len(replies), replies)
        best, worst = int(np.argmax(scores)), int(np.argmin(scores))
        if replies[best] == replies[worst] or scores[best] - scores[worst] < max(cfg.min_gap, 1e-6):
            continue
        rows.append((row["context"], replies[best], replies[worst], run.context_weight([row["user_id"]])[0],
                     row["user_id"], "on_policy", 0.0))  # ranked by the reward model, not by a user's label
    return pd.DataFrame(rows, columns=["context", "chosen", "rejected", "weight", "user_id", "source", "flip"])


def build_pairs(run: MethodRun) -> pd.DataFrame:
    cfg = run.config
    parts = []
    if "preferences" in cfg.pairs and len(run.data.pairs):
        prefs = run.data.pairs
        parts.append(prefs[["context", "chosen", "rejected", "weight", "user_id"]].assign(
            source="preferences", flip=prefs["flip"] if "flip" in prefs else 0.0))
    if "thumbs" in cfg.pairs:
        parts.append(thumbs_pairs(run.data.point, cfg.max_pairs_per_context, run.rng))
    if cfg.on_policy.contexts:
        if not run.policy.has_reward:
            raise ValueError("dpo.on_policy needs a reward model (train one first, or set dpo.on_policy.contexts: 0)")
        point = run.data.point.drop_duplicates("example_id") if len(run.data.point) else run.data.point
        take = run.rng.permutation(len(point))[: cfg.on_policy.contexts]
        parts.append(on_policy_pairs(run, point.iloc[take]))
    pairs = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else pd.DataFrame()
    if len(pairs) == 0:
        raise ValueError(f"dpo found no pairs in the training data (sources: {', '.join(cfg.pairs) or 'none'}, "
                         f"on-policy contexts: {cfg.on_policy.contexts})")
    return pairs.iloc[run.limit(len(pairs))].reset_index(drop=True)


def train(run: MethodRun) -> dict:
    import torch

    from ...losses import dpo
    from ...training import Objective
    from ..train import weights_tensor

    cfg, policy = run.config, run.policy
    pairs = build_pairs(run)
    counts = pairs["source"].value_counts().to_dict()
    run.log(f"[policy] dpo: {len(pairs)} pairs ({', '.join(f'{v} {k}' for k, v in counts.items())}), loss {cfg.loss}, beta {cfg.beta}")
    prompts = run.prompts(pairs["context"])
    chosen, rejected = run.completions(pairs["chosen"]), run.completions(pairs["rejected"])
    weights = pairs["weight"].to_numpy(np.float64)
    flips = pairs["flip"].to_numpy(np.float64) if cfg.flip_rates else None
    ref = None
    if cfg.precompute_ref:
        ref = run.logps(prompts, chosen, reference=True), run.logps(prompts, rejected, reference=True)

    def totals(step) -> dict:
        return {"weight": float(weights[step].sum()), "pairs": len(step)}

    def loss(step, total):
        p = [prompts[i] for i in step]
        replies = [chosen[i] for i in step] + [rejected[i] for i in step]
        pc, pr = policy.sequence_logps(p + p, replies).chunk(2)
        if ref is None:
            rc, rr = policy.sequence_logps(p + p, replies, reference=True).chunk(2)
        else:
            rc, rr = ref[0][step].to(pc.device), ref[1][step].to(pc.device)
        tokens = lambda seqs: torch.tensor([len(seqs[i]) for i in step], dtype=pc.dtype, device=pc.device)  # noqa: E731
        value = dpo(pc - rc, pr - rr, weights_tensor(weights[step], pc.device), beta=cfg.beta, loss_type=cfg.loss,
                    label_smoothing=cfg.label_smoothing if flips is None else weights_tensor(flips[step], pc.device),
                    chosen_tokens=tokens(chosen), rejected_tokens=tokens(rejected),
                    total=total["weight"])
        margin = ((pc - rc) - (pr - rr)).detach()
        return value, {"reward_margin": float(cfg.beta * margin.sum()) / total["pairs"],
                       "accuracy": float((margin > 0).sum()) / total["pairs"]}

    lengths = [len(prompts[i]) + max(len(chosen[i]), len(rejected[i])) for i in range(len(pairs))]
    history = run.fit(lengths, Objective(totals, loss), "policy dpo")
    return {"items": len(pairs), "sources": counts, "weight_sum": float(weights.sum()), "history": history}


CONTRACT = MethodContract(
    name="dpo", description=DESCRIPTION, settings=Config, train=train,
    needs_reward_model=lambda cfg: cfg.on_policy.contexts > 0, reward_model_when="on-policy pairs (dpo.on_policy.contexts > 0)",
    generates=True, returns=("items", "sources", "weight_sum"),
)
