"""Online DPO (Guo et al. 2024, "Direct language model alignment from online AI feedback"), trust-weighted,
on one shared base.

Per round: contexts drawn by trust, ``k`` replies each from the current policy, scored by the reward model
(less the length penalty); each context's best and worst reply make a pair, unless their scores differ
by less than ``min_gap`` (a near-tie says little and is mostly the reward model's noise). Then DPO
(``losses.dpo``) on the round's pairs against the reference, the base with the adapter off, each pair
weighted as its context (``trust``). Unlike DPO on logged pairs, the pairs follow the policy as it moves,
so the reward model, not a fixed set of labels, says what is better.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from ...contracts import MethodContract
from .groups import Groups, GroupSampling, penalised, pick_contexts, sample_groups, trust_pool

if TYPE_CHECKING:
    import torch

    from ..train import MethodRun

DESCRIPTION = "online DPO: k replies per context from the policy each round, the reward model's best vs worst, DPO"


class Config(GroupSampling):
    minibatch_size: int = Field(8, ge=1, description="pairs per optimizer step")
    beta: float = Field(0.1, gt=0)
    loss: Literal["sigmoid", "ipo"] = Field("sigmoid", description="sigmoid (DPO) or ipo")
    min_gap: float = Field(0.0, ge=0, description="skip a context whose best and worst scores differ by less")


def best_and_worst(ranking: torch.Tensor, min_gap: float) -> list[tuple[int, int, int]]:
    """(context, best reply, worst reply) for every context of ``ranking`` [contexts, k] whose best and worst
    differ by at least ``min_gap`` (and by more than nothing: equal scores make no pair)."""
    best, worst = ranking.argmax(1), ranking.argmin(1)
    gap = ranking.max(1).values - ranking.min(1).values
    return [(c, int(best[c]), int(worst[c])) for c in range(len(ranking)) if float(gap[c]) >= max(min_gap, 1e-6)]


def train(run: MethodRun) -> dict:
    import torch
    from tqdm.auto import tqdm

    from ...losses import dpo
    from ...training import Objective, plan_length
    from ..train import weights_tensor

    cfg, policy = run.config, run.policy
    if not policy.has_reward:
        raise ValueError("online_dpo needs a reward model: train one first (the reward stage) and pass it to the policy stage")
    pool, trust = trust_pool(run)
    run.log(f"[policy] online_dpo: {cfg.rounds} rounds of {cfg.contexts_per_round} contexts x {cfg.k} replies "
            f"(trust: {cfg.trust}), best vs worst by the reward model, beta {cfg.beta}")
    trainer = run.online_trainer(cfg.rounds * cfg.epochs * plan_length(cfg.contexts_per_round, cfg.minibatch_size, 1))
    torch.manual_seed(run.seed)
    policy.peft.eval()  # sampling and training see the same network (no dropout)
    history: list[dict] = []
    rounds: list[dict] = []
    weight_sum = 0.0
    for round_ in tqdm(range(cfg.rounds), desc="policy online_dpo", unit="round", disable=run._quiet()):
        started = time.perf_counter()
        picked, weights = pick_contexts(run, trust, cfg.contexts_per_round, cfg.trust)
        groups: Groups = sample_groups(run, list(pool["context"].iloc[picked]), weights, run.seed + 7919 * round_)
        ranking = penalised(groups, cfg)
        pairs = best_and_worst(ranking, cfg.min_gap)
        sampled = time.perf_counter()
        record = {"round": round_ + 1, "score": float(groups.scores.mean()), "reward": float(ranking.mean()),
                  "reply_tokens": float(groups.lengths.float().mean()), "pairs": len(pairs),
                  "chosen_score": float(np.mean([groups.scores[c, b] for c, b, _ in pairs])) if pairs else None,
                  "rejected_score": float(np.mean([groups.scores[c, w] for c, _, w in pairs])) if pairs else None,
                  "sample_seconds": round(sampled - started, 3)}
        rounds.append(record)
        if not pairs:
            continue
        k = cfg.k
        prompts = [groups.prompts[c * k] for c, _, _ in pairs]
        chosen = [groups.completions[c * k + b] for c, b, _ in pairs]
        rejected = [groups.completions[c * k + w] for c, _, w in pairs]
        w = np.array([groups.weights[c * k] for c, _, _ in pairs])
        ref = run.logps(prompts, chosen, reference=True), run.logps(prompts, rejected, reference=True)

        def totals(step, w=w) -> dict:
            return {"weight": float(w[step].sum()), "pairs": len(step)}

        def loss(step, total, w=w, prompts=prompts, chosen=chosen, rejected=rejected, ref=ref):
            p = [prompts[i] for i in step]
            pc, pr = policy.sequence_logps(p + p, [chosen[i] for i in step] + [rejected[i] for i in step]).chunk(2)
            rc, rr = ref[0][step].to(pc.device), ref[1][step].to(pc.device)
            tokens = lambda seqs: torch.tensor([len(seqs[i]) for i in step], dtype=pc.dtype, device=pc.device)  # noqa: E731
            value = dpo(pc - rc, pr - rr, weights_tensor(w[step], pc.device), beta=cfg.beta, loss_type=cfg.loss,
                        chosen_tokens=tokens(chosen), rejected_tokens=tokens(rejected), total=total["weight"])
            margin = ((pc - rc) - (pr - rr)).detach()
            return value, {"reward_margin": float(cfg.beta * margin.sum()) / total["pairs"],
                           "accuracy": float((margin > 0).sum()) / total["pairs"]}

        plan = [order[start: start + cfg.minibatch_size] for order in (run.rng.permutation(len(pairs)) for _ in range(cfg.epochs))
                for start in range(0, len(pairs), cfg.minibatch_size)]
        rows = (trainer if trainer is not None else run.trainer(len(plan))).fit(plan, Objective(totals, loss))
        history += [{**row, "step": len(history) + i + 1, "round": round_ + 1} for i, row in enumerate(rows)]
        record["update_seconds"] = round(time.perf_counter() - sampled, 3)
        weight_sum += float(w.sum())
    if not history:
        raise ValueError("online_dpo made no pairs in any round: every context's replies scored within min_gap")
    return {"items": sum(r["pairs"] for r in rounds), "rounds": rounds, "weight_sum": weight_sum, "history": history}


CONTRACT = MethodContract(
    name="online_dpo", description=DESCRIPTION, settings=Config, train=train, needs_reward_model=True, generates=True,
    online=True, fsdp="it samples replies every round, and sampling from FSDP-sharded parameters is not built yet",
    returns=("items", "rounds", "weight_sum"),
)
