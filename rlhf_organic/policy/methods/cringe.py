"""Trust-weighted Cringe, the BlenderBot 3x method (Adolphs et al. 2022).

Cross-entropy on liked replies plus, on disliked ones, the token-level contrastive loss: each token
of a bad reply is pushed below a token sampled from the model's own top-k alternatives. Every token
is weighted by its reply's trust weight. With ``iterations`` > 1 it iterates as in the paper: sample
replies for training contexts from the trained policy, label them with the reward model (score above
``threshold``: good), add them to the data, and train again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pydantic import Field

from ...contracts import MethodContract
from ...section import Section

if TYPE_CHECKING:
    from ..train import MethodRun

DESCRIPTION = "Cringe: cross-entropy on liked replies, token-level contrast on disliked ones (BB3x)"


class Config(Section):
    alpha: float = Field(1.0, ge=0, description="weight of the contrastive loss on bad replies")
    k: int = Field(5, ge=1, description="the positive token is sampled from the model's top-k (other than the bad one)")
    iterations: int = Field(1, ge=1, description="rounds; each after the first adds reward-labelled policy samples")
    contexts_per_iteration: int = Field(256, ge=1, description="training contexts sampled per added round")
    threshold: float = Field(0.0, description="reward-model score (logit) above which a sampled reply counts as good")


def labelled_samples(run: MethodRun, point: pd.DataFrame, n: int) -> pd.DataFrame:
    """One sampled reply for each of ``n`` training contexts, labelled good / bad by the reward model."""
    unique = point.drop_duplicates("example_id")  # permute the deduplicated rows: their count, not point's
    rows = unique.iloc[run.rng.permutation(len(unique))[:n]]
    replies = [r[0] for r in run.sample(list(rows["context"]), 1, "cringe samples")]
    scores = run.policy.reward_scores(list(rows["context"]), replies)
    return pd.DataFrame({"context": list(rows["context"]), "response": replies,
                         "label": (scores > run.config.threshold).astype(np.float32),
                         "weight": run.context_weight(rows["user_id"]), "user_id": list(rows["user_id"])})


def train(run: MethodRun) -> dict:
    import torch

    from ...losses import cringe, token_nll, token_weight_sum
    from ...sequences import batch_sequences
    from ...training import Objective, plan_length
    from ..train import completion_tokens, weights_tensor

    cfg, policy = run.config, run.policy
    point = run.data.point
    if len(point) == 0:
        raise ValueError("cringe needs thumbs in the training data; this dataset has none")
    if cfg.iterations > 1 and not policy.has_reward:
        raise ValueError("cringe.iterations > 1 labels samples with the reward model: train one first")
    items = point.iloc[run.limit(len(point))][["context", "response", "label", "weight", "user_id"]].reset_index(drop=True)
    history, rounds = [], []
    # on the logits' device: torch.multinomial refuses a CPU generator for CUDA tensors
    generator = torch.Generator(device=policy.device).manual_seed(run.seed)
    t = run.section.train  # one optimizer over every round; its schedule spans them all (each adds at most the contexts asked)
    trainer = run.online_trainer(sum(plan_length(len(items) + r * cfg.contexts_per_iteration, t.batch_size, t.epochs)
                                     for r in range(cfg.iterations)))
    for round_ in range(cfg.iterations):
        if round_:
            added = labelled_samples(run, point, cfg.contexts_per_iteration)
            items = pd.concat([items, added], ignore_index=True)
            run.log(f"[policy] cringe round {round_ + 1}: added {len(added)} samples, {int(added['label'].sum())} labelled good")
        good = items["label"].to_numpy() > 0
        weights = items["weight"].to_numpy(np.float64)
        run.log(f"[policy] cringe: {int(good.sum())} good and {int((~good).sum())} bad replies (alpha {cfg.alpha}, k {cfg.k})")
        prompts = run.prompts(items["context"])
        completions = run.completions(items["response"])

        tokens = np.array([completion_tokens(p, c) for p, c in zip(prompts, completions)], np.float64)

        def totals(step, good=good, weights=weights, tokens=tokens) -> dict:
            return {"nll_weight": token_weight_sum(tokens[step][good[step]], weights[step][good[step]]),
                    "cringe_weight": token_weight_sum(tokens[step][~good[step]], weights[step][~good[step]])}

        def loss(step, total, good=good, weights=weights, prompts=prompts, completions=completions):
            ids, mask, comp = batch_sequences([prompts[i] for i in step], [completions[i] for i in step], policy.pad_id, policy.device)
            logits, labels, comp, _, _ = policy.completion_logits(ids, mask, comp)
            w = weights_tensor(weights[step], logits.device)
            pos = torch.as_tensor(good[step], device=logits.device)
            neg = ~pos
            nll = token_nll(logits[pos], labels[pos], comp[pos], w[pos], total["nll_weight"]) if pos.any() else logits.sum() * 0
            contrast = (cringe(logits[neg], labels[neg], comp[neg], w[neg], k=cfg.k, generator=generator, total=total["cringe_weight"])
                        if neg.any() else logits.sum() * 0)
            return nll + cfg.alpha * contrast, {"nll": float(nll.detach()), "cringe": float(contrast.detach())}

        lengths = [len(prompts[i]) + len(completions[i]) for i in range(len(items))]
        history += run.fit(lengths, Objective(totals, loss), f"policy cringe{f' round {round_ + 1}' if cfg.iterations > 1 else ''}",
                           trainer)
        rounds.append({"items": len(items), "good": int(good.sum()), "bad": int((~good).sum())})
    return {"items": len(items), "rounds": rounds, "weight_sum": float(items["weight"].sum()), "history": history}


CONTRACT = MethodContract(
    name="cringe", description=DESCRIPTION, settings=Config, train=train,
    needs_reward_model=lambda cfg: cfg.iterations > 1, reward_model_when="iterations (cringe.iterations > 1)",
    generates=True, online=True, returns=("items", "rounds", "weight_sum"),
)
