"""Trust-weighted KTO: the thumbs as they come, no pairing needed (a liked reply is desirable, a disliked
one undesirable). This is the method that fits organic feedback best: every rated reply is used, while
DPO finds a pair only where one context got both a liked and a disliked reply, or an A/B choice.

Each example's trust weight multiplies KTO's class weights (``desirable_weight``, ``undesirable_weight``).
KTO's reference point, the KL term, is estimated per step from mismatched pairs (each prompt with
another example's reply, fixed once per run) as in the paper, without gradient, over the whole step
(every micro-batch and process), so that a split step is the unsplit one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from ...contracts import MethodContract
from ...section import Section

if TYPE_CHECKING:
    from ..train import MethodRun

DESCRIPTION = "Kahneman-Tversky optimisation on unpaired thumbs (liked = desirable, disliked = undesirable)"


class Config(Section):
    beta: float = Field(0.1, gt=0)
    desirable_weight: float = Field(1.0, gt=0, description="class weight of liked replies")
    undesirable_weight: float = Field(
        1.0, gt=0, description="class weight of disliked replies; KTO suggests weights that balance the classes"
    )
    use_kl: bool = Field(True, description="false: no reference point (KL term 0), one forward fewer per step")
    precompute_ref: bool = Field(True, description="reference log-probs once before training, not every step")


def train(run: MethodRun) -> dict:
    import torch

    from ...losses import kto
    from ...training import Objective
    from ..train import weights_tensor

    cfg, policy = run.config, run.policy
    point = run.data.point
    if len(point) == 0:
        raise ValueError("kto needs thumbs in the training data; this dataset has none")
    point = point.iloc[run.limit(len(point))].reset_index(drop=True)
    desirable = point["label"].to_numpy() > 0
    weights = point["weight"].to_numpy(np.float64)
    run.log(f"[policy] kto: {int(desirable.sum())} liked and {int((~desirable).sum())} disliked replies, beta {cfg.beta}")
    prompts = run.prompts(point["context"])
    completions = run.completions(point["response"])
    # the mismatched reply each prompt is paired with for the KL estimate: a fixed shift of a permutation
    order = run.rng.permutation(len(point))
    partner = np.empty(len(point), np.int64)
    partner[order] = np.roll(order, 1)
    ref = ref_kl = None
    if cfg.precompute_ref:
        ref = run.logps(prompts, completions, reference=True)
        ref_kl = run.logps(prompts, [completions[j] for j in partner], reference=True) if cfg.use_kl else None

    def totals(step) -> dict:
        out = {"weight": float(weights[step].sum()), "items": len(step)}
        if cfg.use_kl:  # the reference point: the mean over the whole step of log pi - log pi_ref on mismatched pairs
            p, kl_pairs = [prompts[i] for i in step], [completions[partner[i]] for i in step]
            policy_kl = policy.sequence_logps(p, kl_pairs)
            base_kl = ref_kl[step].to(policy_kl.device) if ref_kl is not None else policy.sequence_logps(p, kl_pairs, reference=True)
            out["kl_sum"] = float((policy_kl - base_kl).sum())
        return out

    def loss(step, total):
        p = [prompts[i] for i in step]
        logps = policy.sequence_logps(p, [completions[i] for i in step])
        if ref is None:
            ref_logps = policy.sequence_logps(p, [completions[i] for i in step], reference=True)
        else:
            ref_logps = ref[step].to(logps.device)
        kl = max(0.0, total["kl_sum"] / total["items"]) if cfg.use_kl else 0.0
        d = torch.as_tensor(desirable[step], device=logps.device)
        value = kto(logps - ref_logps, d, kl, weights_tensor(weights[step], logps.device), beta=cfg.beta,
                    desirable_weight=cfg.desirable_weight, undesirable_weight=cfg.undesirable_weight, total=total["weight"])
        return value, {"kl": kl * len(step) / total["items"]}

    lengths = [len(prompts[i]) + len(completions[i]) for i in range(len(point))]
    history = run.fit(lengths, Objective(totals, loss), "policy kto")
    return {"items": len(point), "desirable": int(desirable.sum()), "undesirable": int((~desirable).sum()),
            "weight_sum": float(weights.sum()), "history": history}


CONTRACT = MethodContract(name="kto", description=DESCRIPTION, settings=Config, train=train,
                          returns=("items", "desirable", "undesirable", "weight_sum"))
