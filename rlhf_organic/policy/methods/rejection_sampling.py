"""Rejection-sampling fine-tuning (best-of-n; RAFT, ReST, Llama 2): rounds of sample, score, keep, fine-tune.

Per round: draw ``contexts_per_round`` training contexts (from users with trust above 0), sample ``n``
replies each from the current policy in one batch (the prompt's key/value cache computed once and
shared by its ``n`` samples), score them with the reward model, keep the best (``keep: best``), the
``k`` best (``top_k``) or every reply scoring above ``threshold`` (``threshold``), and fine-tune on
the kept replies with cross-entropy, each reply weighted by the trust of the user whose context it
is. The next round samples from the updated policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, model_validator

from ...contracts import MethodContract
from ...section import Section

if TYPE_CHECKING:
    from ..train import MethodRun

DESCRIPTION = "rejection sampling: sample n replies, keep the reward model's best, weighted fine-tuning, repeat"


class Config(Section):
    rounds: int = Field(2, ge=1, description="sample-score-keep-train rounds")
    contexts_per_round: int = Field(512, ge=1, description="training contexts sampled per round")
    n: int = Field(4, ge=1, description="replies sampled per context")
    keep: Literal["best", "top_k", "threshold"] = Field("best", description="which samples to fine-tune on")
    k: int = Field(1, ge=1, description="with keep: top_k, the k best replies of each context")
    threshold: float = Field(0.0, description="with keep: threshold, replies scoring above this (reward logit)")
    temperature: float = Field(0.9, gt=0, description="sampling")
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(32, ge=1)
    batch_size: int = Field(16, ge=1, description="contexts per generate() call (each with its n samples)")

    @model_validator(mode="after")
    def _k_at_most_n(self):
        if self.keep == "top_k" and self.k > self.n:
            raise ValueError(f"k ({self.k}) must be at most n ({self.n})")
        return self


def select(scores: np.ndarray, keep: str, k: int = 1, threshold: float = 0.0) -> np.ndarray:
    """[contexts, n] scores -> boolean mask of the samples kept (ties: the earlier sample)."""
    kept = np.zeros(scores.shape, bool)
    if keep == "threshold":
        return scores > threshold
    top = 1 if keep == "best" else k
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    np.put_along_axis(kept, order, True, axis=1)
    return kept


def sample_round(run: MethodRun, contexts: list, seed: int) -> tuple[list[list[str]], np.ndarray]:
    """``n`` replies per context and their reward-model scores [contexts, n]."""
    from tqdm.auto import tqdm

    cfg, policy = run.config, run.policy
    prompts = run.prompts(contexts)
    texts: list[str] = []
    with tqdm(total=len(prompts) * cfg.n, desc="rejection sampling: sample", unit="reply", disable=run._quiet()) as bar:
        for start in range(0, len(prompts), cfg.batch_size):
            chunk = prompts[start: start + cfg.batch_size]
            texts += policy.generate(chunk, n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p,
                                     max_new_tokens=cfg.max_new_tokens, seed=seed + start).texts
            bar.update(len(chunk) * cfg.n)
    flat_contexts = [c for c in contexts for _ in range(cfg.n)]
    scores = np.asarray(policy.reward_scores(flat_contexts, texts), np.float64).reshape(len(contexts), cfg.n)
    return [texts[i * cfg.n: (i + 1) * cfg.n] for i in range(len(contexts))], scores


def train(run: MethodRun) -> dict:
    import pandas as pd

    from ...losses import token_mean, token_weight_sum
    from ...sequences import batch_sequences
    from ...training import Objective, plan_length
    from ..train import completion_tokens, weights_tensor
    from .ppo import context_pool

    cfg, policy = run.config, run.policy
    if not policy.has_reward:
        raise ValueError("rejection_sampling needs a reward model: train one first (the reward stage)")
    pool, weights = context_pool(run)
    trusted = np.flatnonzero(weights > 0)  # a context of weight 0 would be sampled for nothing
    run.log(f"[policy] rejection sampling: {cfg.rounds} rounds x {cfg.contexts_per_round} contexts x {cfg.n} samples, "
            f"keep {cfg.keep}; {len(trusted)} contexts with trust > 0")
    history, rounds, kept_total, weight_sum = [], [], 0, 0.0
    # one optimizer over every round; its schedule spans the most replies the rounds can keep
    most = {"best": 1, "top_k": cfg.k, "threshold": cfg.n}[cfg.keep] * min(cfg.contexts_per_round, len(trusted))
    trainer = run.online_trainer(cfg.rounds * plan_length(most, run.section.train.batch_size, run.section.train.epochs))
    for round_ in range(cfg.rounds):
        picked = run.rng.choice(trusted, min(cfg.contexts_per_round, len(trusted)), replace=False)
        contexts = list(pool["context"].iloc[picked])
        replies, scores = sample_round(run, contexts, run.seed + 7919 * round_)
        kept = select(scores, cfg.keep, cfg.k, cfg.threshold)
        rows = [(c, i) for c in range(len(contexts)) for i in range(cfg.n) if kept[c, i]]
        record = {"round": round_ + 1, "sampled": int(scores.size), "kept": len(rows), "mean_score": float(scores.mean()),
                  "kept_mean_score": float(scores[kept].mean()) if len(rows) else None}
        rounds.append(record)
        run.log(f"[policy] rejection sampling round {round_ + 1}: kept {len(rows)} of {scores.size} replies, mean score "
                f"{record['mean_score']:.3f} -> {record['kept_mean_score'] if rows else float('nan'):.3f} kept")
        if not rows:
            continue
        items = pd.DataFrame({"context": [contexts[c] for c, _ in rows], "response": [replies[c][i] for c, i in rows],
                              "weight": weights[picked[[c for c, _ in rows]]]})
        prompts, completions = run.prompts(items["context"]), run.completions(items["response"])
        w = items["weight"].to_numpy(np.float64)

        tokens = np.array([completion_tokens(p, c) for p, c in zip(prompts, completions)], np.float64)

        def totals(step, w=w, tokens=tokens) -> dict:
            return {"tokens": token_weight_sum(tokens[step], w[step])}

        def loss(step, total, w=w, prompts=prompts, completions=completions):
            ids, mask, comp = batch_sequences([prompts[i] for i in step], [completions[i] for i in step], policy.pad_id, policy.device)
            logps, seen = policy.completion_token_logps(ids, mask, comp)
            return token_mean(-logps, seen, weights_tensor(w[step], logps.device), total["tokens"]), {}

        lengths = [len(p) + len(c) for p, c in zip(prompts, completions)]
        history += [{**row, "round": round_ + 1}
                    for row in run.fit(lengths, Objective(totals, loss), f"rejection sampling: train round {round_ + 1}", trainer)]
        kept_total += len(rows)
        weight_sum += float(w.sum())
    if not history:
        raise ValueError("rejection_sampling kept no samples in any round (threshold too high?)")
    return {"items": kept_total, "rounds": rounds, "weight_sum": weight_sum, "history": history}


CONTRACT = MethodContract(name="rejection_sampling", description=DESCRIPTION, settings=Config, train=train,
                          needs_reward_model=True, generates=True, online=True, returns=("items", "rounds", "weight_sum"))
