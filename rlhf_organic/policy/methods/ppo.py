"""PPO with a KL penalty to the reference (Ouyang et al. 2022), compact, on one shared base.

Per round: draw ``contexts_per_round`` training contexts (with probability proportional to the trust
of the user whose conversation each comes from), sample one reply each from the policy adapter, and
score it with the reward model (its adapter + head on the same base when it shares it). Then, without
gradient: the policy's and the reference's (adapter off) per-token log-probs and the value head's
values, all from one right-padded re-scoring pass, so the first PPO epoch starts at ratio 1 and KL 0
whatever the generation padding was. Log-probs are those of the sampling distribution (logits divided by
the rollout ``temperature``), so the replies are on-policy for the distribution being optimised.
Rewards: ``-kl_coef * (log pi - log pi_ref)`` per token, plus the (clipped) reward-model score at the
last token; GAE advantages, whitened; returns = advantages + values. Then ``ppo_epochs`` passes over the
rollouts in minibatches: clipped surrogate + ``vf_coef`` x clipped value loss, stopping a round's epochs
early when the approximate KL to the rollout policy passes 1.5 x ``target_kl``. The updates run on the
shared loop (``training.Trainer``: one optimizer and schedule over all rounds, micro-batches, the non-finite
guard, a checkpoint per round so that a killed run resumes, live tracking).

The value head is a linear layer on the policy's last hidden state (one forward gives logits and
values). Dropout is off throughout: PPO's ratios must compare like with like.

Trust enters through the contexts (a troll's conversations are drawn in proportion to the troll's
trust, so hardly ever) and through the reward model, trained on trust-weighted labels. The rollout
losses are not weighted again: a context's trust already decided how often it is drawn.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from ...contracts import MethodContract
from ...section import Section

if TYPE_CHECKING:
    from ..train import MethodRun

DESCRIPTION = "PPO: rollouts from the policy, reward-model scores, KL penalty to the reference, value head, GAE"


class Config(Section):
    rounds: int = Field(20, ge=1, description="rollout batches, each followed by ppo_epochs of updates")
    contexts_per_round: int = Field(64, ge=1, description="contexts (one reply each) per rollout batch")
    ppo_epochs: int = Field(4, ge=1, description="passes over each rollout batch")
    minibatch_size: int = Field(16, ge=1, description="rollouts per optimizer step")
    kl_coef: float = Field(0.05, ge=0, description="per-token penalty on log pi - log pi_ref")
    cliprange: float = Field(0.2, gt=0, description="policy ratio clip")
    cliprange_value: float = Field(0.2, gt=0, description="value clip around the rollout's values")
    vf_coef: float = Field(0.1, ge=0, description="weight of the value loss")
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda")
    whiten_rewards: bool = Field(False, description="whiten the per-token rewards before GAE")
    reward_clip: float | None = Field(10.0, gt=0, description="clip reward-model scores to [-c, c]")
    missing_eos_penalty: float | None = Field(None, ge=0, description="subtract from the score of replies cut off before EOS")
    target_kl: float | None = Field(0.1, gt=0, description="stop a round's epochs when approx KL > 1.5 x this")
    temperature: float = Field(0.7, gt=0, description="rollout sampling")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(32, ge=1)


def context_pool(run: MethodRun):
    """Unique (context, user_id) of the training data with each one's draw weight (the user's trust)."""
    import pandas as pd

    frames = [df[["context", "user_id"]] for df in (run.data.point, run.data.pairs) if len(df)]
    if not frames:
        raise ValueError("ppo needs training contexts (thumbs or A/B choices); this dataset has none")
    pool = pd.concat(frames, ignore_index=True)
    key = pool["context"].map(lambda c: repr([(m["role"], m["content"]) for m in c]))
    pool = pool.loc[~key.duplicated()].reset_index(drop=True)
    weights = run.context_weight(pool["user_id"])
    if weights.sum() <= 0:
        raise ValueError("ppo: every context has weight 0 (no trusted user); nothing to draw from")
    return pool, weights


def draw(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    """``n`` indices drawn with probability proportional to ``weights`` (without replacement while possible)."""
    p = weights / weights.sum()
    return rng.choice(len(p), n, replace=int((p > 0).sum()) < n, p=p)


def rollout(run: MethodRun, contexts, user_ids, seed: int) -> dict:
    """Replies, scores and the no-gradient per-token tensors of one rollout batch."""
    import torch

    from ...losses import gae, token_rewards, whiten

    cfg, policy = run.config, run.policy
    prompts = run.prompts(contexts)
    gen = policy.generate(prompts, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=seed)
    # an empty reply (EOS at once) still has its EOS token; a model that never ends is cut at max_new_tokens
    completions = [c if c else [policy.tokenizer.eos_token_id] for c in gen.completions]
    scores = torch.as_tensor(policy.reward_scores(list(contexts), gen.texts), dtype=torch.float32)
    if cfg.missing_eos_penalty is not None:
        ended = torch.tensor([c[-1] == policy.tokenizer.eos_token_id for c in completions])
        scores = torch.where(ended, scores, scores - cfg.missing_eos_penalty)
    if cfg.reward_clip is not None:
        scores = scores.clamp(-cfg.reward_clip, cfg.reward_clip)
    logps, values, mask, ref_logps = rollout_stats(run, prompts, completions)
    rewards, kl = token_rewards(scores.to(logps.device), logps, ref_logps, mask, cfg.kl_coef)
    if cfg.whiten_rewards:
        rewards = whiten(rewards, mask, shift_mean=False)
    advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
    advantages = whiten(advantages, mask)
    return {"prompts": prompts, "completions": completions, "texts": gen.texts, "scores": scores,
            "logps": logps, "values": values, "mask": mask, "advantages": advantages, "returns": returns,
            "kl": kl.sum(1)}


def rollout_stats(run: MethodRun, prompts, completions):
    """(log-probs, values, mask, reference log-probs) per completion token, in minibatches of the update's size:
    memory peaks in the update, not in this no-gradient pass over the whole rollout batch."""
    import torch
    import torch.nn.functional as F

    cfg, policy = run.config, run.policy
    steps = max(len(c) for c in completions)
    parts = []
    with torch.no_grad():
        for start in range(0, len(prompts), cfg.minibatch_size):
            p, c = prompts[start: start + cfg.minibatch_size], completions[start: start + cfg.minibatch_size]
            logps, values, mask = policy.token_stats(p, c, values=True, temperature=cfg.temperature)
            ref, _, _ = policy.token_stats(p, c, reference=True, temperature=cfg.temperature)
            parts.append([F.pad(x, (0, steps - x.shape[1])) for x in (logps, values, mask, ref)])
    return tuple(torch.cat(column) for column in zip(*parts))


def update_objective(run: MethodRun, batch: dict):
    """The PPO loss over minibatches of one rollout batch, as an ``Objective``: token means over the whole
    minibatch, so that micro-batches add up to it."""
    import torch

    from ...losses import ppo_policy_loss, ppo_value_loss
    from ...training import Objective

    cfg, policy = run.config, run.policy
    lengths = batch["mask"].sum(1)

    def totals(rows) -> dict:
        return {"tokens": float(lengths[torch.as_tensor(rows)].sum())}

    def loss(rows, total):
        rows = torch.as_tensor(rows)
        steps = int(lengths[rows].max())
        pick = lambda x: x[rows][:, :steps]  # noqa: E731 - drop the columns no row of this micro-batch uses
        logps, values, mask = policy.token_stats([batch["prompts"][i] for i in rows], [batch["completions"][i] for i in rows],
                                                 values=True, temperature=cfg.temperature)
        pg, pg_stats = ppo_policy_loss(logps, pick(batch["logps"]), pick(batch["advantages"]), mask, cfg.cliprange, total["tokens"])
        vf, vf_stats = ppo_value_loss(values, pick(batch["values"]), pick(batch["returns"]), mask, cfg.cliprange_value, total["tokens"])
        return pg + cfg.vf_coef * vf, {"pg_loss": float(pg.detach()), "vf_loss": float(vf.detach()), **pg_stats, **vf_stats}

    return Objective(totals, loss)


def train(run: MethodRun) -> dict:
    import torch
    from tqdm.auto import tqdm

    from ...training import plan_length

    cfg, policy = run.config, run.policy
    if not policy.has_reward:
        raise ValueError("ppo needs a reward model: train one first (the reward stage) and pass it to the policy stage")
    pool, weights = context_pool(run)
    run.log(f"[policy] ppo: {cfg.rounds} rounds of {cfg.contexts_per_round} rollouts from {int((weights > 0).sum())} "
            f"contexts (drawn by trust), {cfg.ppo_epochs} epochs, kl_coef {cfg.kl_coef}")
    if policy.value_head is None:
        policy.add_value_head()
    per_epoch = plan_length(cfg.contexts_per_round, cfg.minibatch_size, 1)
    trainer = run.online_trainer(cfg.rounds * cfg.ppo_epochs * per_epoch)
    torch.manual_seed(run.seed)
    policy.peft.eval()  # no dropout: the ratio of new to rollout log-probs must start at exactly 1
    history: list[dict] = []
    rounds: list[dict] = []
    bar = tqdm(range(cfg.rounds), desc="policy ppo", unit="round", disable=run._quiet())
    for round_ in bar:
        started = time.perf_counter()
        picked = draw(run.rng, weights, cfg.contexts_per_round)
        batch = rollout(run, list(pool["context"].iloc[picked]), list(pool["user_id"].iloc[picked]), run.seed + round_)
        rolled = time.perf_counter()
        objective = update_objective(run, batch)
        round_trainer = trainer if trainer is not None else run.trainer(cfg.ppo_epochs * per_epoch)
        plan = [order[start: start + cfg.minibatch_size] for order in (run.rng.permutation(len(picked)) for _ in range(cfg.ppo_epochs))
                for start in range(0, len(order), cfg.minibatch_size)]

        def kl_passed(steps_done: int, rows: list[dict]) -> bool:
            """After a whole epoch: whether its mean approximate KL to the rollout policy passed 1.5 x target_kl."""
            if cfg.target_kl is None or steps_done % per_epoch:
                return False
            kls = [row["approx_kl"] for row in rows[-per_epoch:] if "approx_kl" in row]
            return bool(kls) and float(np.mean(kls)) > 1.5 * cfg.target_kl

        # the shared loop: schedule, non-finite guard, micro-batches, a checkpoint per round, live tracking
        rows = round_trainer.fit(plan, objective, stop=kl_passed)
        history += [{**row, "step": len(history) + i + 1, "round": round_ + 1, "epoch": i // per_epoch + 1}
                    for i, row in enumerate(rows)]
        stopped = len(rows) // per_epoch if len(rows) < len(plan) else None
        record = {"round": round_ + 1, "score": float(batch["scores"].mean()), "kl_to_reference": float(batch["kl"].mean()),
                  "reply_tokens": float(batch["mask"].sum(1).float().mean()), "early_stop_epoch": stopped,
                  "rollout_seconds": round(rolled - started, 3), "update_seconds": round(time.perf_counter() - rolled, 3)}
        rounds.append(record)
        bar.set_postfix(score=f"{record['score']:.2f}", kl=f"{record['kl_to_reference']:.2f}", refresh=False)
    bar.close()
    return {"items": cfg.rounds * cfg.contexts_per_round, "rounds": rounds, "weight_sum": float(weights.sum()),
            "history": history}


CONTRACT = MethodContract(
    name="ppo", description=DESCRIPTION, settings=Config, train=train, needs_reward_model=True, generates=True, online=True,
    fsdp="it samples rollouts every round, and sampling from FSDP-sharded parameters is not built yet",
    returns=("items", "rounds", "weight_sum"),
)
