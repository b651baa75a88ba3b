"""What RLOO, GRPO and online DPO share: each round draws contexts by trust, samples ``k`` replies per
context from the current policy, and scores them with the reward model on the same base.

Trust enters in one of three ways (``trust``): ``draw`` picks contexts in proportion to the trust of the
user whose conversation each comes from (a troll's hardly ever come up) and weighs every reply 1;
``weight`` picks uniformly among contexts with trust above 0 and weighs each reply's loss by that trust;
``both`` does both. The reward model was itself trained on trust-weighted labels.

RLOO and GRPO then share one update (``train_rounds``): the replies' no-gradient log-probs under the
sampling policy and the reference (the base with the adapter off), per-reply advantages from the method,
and ``epochs`` passes of ``losses.clipped_token_loss`` in minibatches on the shared loop
(``training.Trainer``: one optimizer over all rounds, micro-batches, the non-finite guard, checkpoints).
Dropout is off throughout, as in PPO: the first step on fresh samples must see ratio 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from ...section import Section

if TYPE_CHECKING:  # torch is imported where it runs: the CLI lists methods without loading it
    import torch

    from ..train import MethodRun

    Advantages = Callable[["Groups", "torch.Tensor | None"], tuple[torch.Tensor, torch.Tensor]]

Trust = Literal["draw", "weight", "both"]


class GroupSampling(Section):
    """Settings of a round's samples, shared by rloo, grpo and online_dpo."""

    rounds: int = Field(20, ge=1, description="sample-score-update rounds")
    contexts_per_round: int = Field(16, ge=1, description="contexts drawn per round")
    k: int = Field(4, ge=2, description="replies sampled per context (the group its baseline comes from)")
    epochs: int = Field(2, ge=1, description="passes over each round's replies (above 1, the clip matters)")
    minibatch_size: int = Field(16, ge=1, description=(
        "replies per optimizer step; with epochs 1 and every reply of a round in one step, the sampling "
        "log-probs need no pass of their own"))
    trust: Trust = Field("draw", description=(
        "draw: contexts drawn in proportion to their user's trust, every reply weighs 1; weight: contexts drawn "
        "uniformly among trusted users', each reply's loss weighted by that trust; both: drawn and weighted"))
    temperature: float = Field(0.9, gt=0, description="sampling")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(32, ge=1)
    generation_batch_size: int = Field(16, ge=1, description="contexts per generate() call (each with its k samples)")
    reward_clip: float | None = Field(10.0, gt=0, description="clip reward-model scores to [-c, c]")
    length_cap: int = Field(0, ge=0, description="reply tokens past which length_coef is charged")
    length_coef: float = Field(0.0, ge=0, description=(
        "reward taken off per reply token past length_cap: the guard against a reward model that pays for length"))


class GroupUpdate(GroupSampling):
    """RLOO's and GRPO's update on top of the samples."""

    clip: float = Field(0.2, gt=0, description="ratio clip of the token-level objective")


@dataclass
class Groups:
    """One round's samples: ``contexts`` x ``k`` replies, flat in context order (context i's replies at
    i*k .. i*k+k-1)."""

    prompts: list[list[int]]  # per reply, its context's prompt
    completions: list[list[int]]  # reply token ids (ending with EOS when the model stopped)
    texts: list[str]
    scores: torch.Tensor  # [contexts, k] reward-model scores (clipped)
    lengths: torch.Tensor  # [contexts, k] reply tokens
    weights: np.ndarray  # per reply, its context's loss weight (1 under trust: draw)


def trust_pool(run: MethodRun):
    """The training contexts and each one's trust (``ppo.context_pool``)."""
    from .ppo import context_pool

    return context_pool(run)


def pick_contexts(run: MethodRun, trust: np.ndarray, n: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(indices of ``n`` contexts, each one's loss weight) under the ``trust`` setting ``mode``."""
    from .ppo import draw

    chances = trust if mode in ("draw", "both") else (trust > 0).astype(np.float64)
    picked = draw(run.rng, chances, n)
    weights = trust[picked] if mode in ("weight", "both") else np.ones(len(picked))
    return picked, weights


def sample_groups(run: MethodRun, contexts: list, weights: np.ndarray, seed: int) -> Groups:
    """``k`` replies per context from the current policy, scored by the reward model; the length penalty
    is not applied here (the scores are the reward model's own, for the round's record)."""
    import torch

    cfg, policy = run.config, run.policy
    prompts = run.prompts(contexts)
    eos = policy.tokenizer.eos_token_id
    completions: list[list[int]] = []
    texts: list[str] = []
    for start in range(0, len(prompts), cfg.generation_batch_size):
        gen = policy.generate(prompts[start: start + cfg.generation_batch_size], n=cfg.k, temperature=cfg.temperature,
                              top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=seed + start)
        # a reply that is EOS at once still has that token to learn from
        completions += [c if c else [eos] for c in gen.completions]
        texts += gen.texts
    flat_contexts = [c for c in contexts for _ in range(cfg.k)]
    scores = torch.as_tensor(policy.reward_scores(flat_contexts, texts), dtype=torch.float32)
    if cfg.reward_clip is not None:
        scores = scores.clamp(-cfg.reward_clip, cfg.reward_clip)
    shape = (len(contexts), cfg.k)
    return Groups([p for p in prompts for _ in range(cfg.k)], completions, texts, scores.reshape(shape),
                  torch.tensor([len(c) for c in completions]).reshape(shape), np.repeat(weights, cfg.k))


def penalised(groups: Groups, cfg) -> torch.Tensor:
    """The scores less the length penalty (``length_cap``, ``length_coef``)."""
    from ...losses import length_penalised

    return length_penalised(groups.scores, groups.lengths, cfg.length_cap, cfg.length_coef)


def token_logps(run: MethodRun, groups: Groups, *, reference: bool) -> torch.Tensor:
    """[replies, steps] per-token log-probs of the replies (0 past each one's end) under the policy or the
    reference, from the same right-padded pass that training uses (``PolicyModel.token_stats``), at the
    sampling temperature, in minibatches: memory peaks in the update, not here."""
    import torch
    import torch.nn.functional as F

    cfg, policy = run.config, run.policy
    steps = int(groups.lengths.max())
    parts = []
    with torch.no_grad():
        for start in range(0, len(groups.prompts), cfg.minibatch_size):
            rows = slice(start, start + cfg.minibatch_size)
            logps, _, _ = policy.token_stats(groups.prompts[rows], groups.completions[rows], reference=reference,
                                             temperature=cfg.temperature)
            parts.append(F.pad(logps, (0, steps - logps.shape[1])))
    return torch.cat(parts)


def reply_mask(groups: Groups) -> torch.Tensor:
    """[replies, steps]: 1 on each reply's tokens."""
    import torch

    lengths = groups.lengths.reshape(-1)
    return (torch.arange(int(lengths.max()))[None] < lengths[:, None]).long()


def clipped_objective(run: MethodRun, groups: Groups, advantages: torch.Tensor, old: torch.Tensor | None,
                      ref: torch.Tensor | None, kl_coef: float):
    """The clipped token-level loss over a round's replies as an ``Objective``. ``old``: the sampling
    policy's log-probs, None when every reply is used in one step right after sampling (then the policy's
    own, detached, are the same numbers: one pass fewer). ``ref`` with ``kl_coef``: KL in the loss (GRPO)."""
    import torch

    from ...losses import clipped_token_loss, token_weight_sum
    from ...training import Objective
    from ..train import weights_tensor

    cfg, policy = run.config, run.policy
    lengths = groups.lengths.reshape(-1).numpy()
    flat_advantages = advantages.reshape(-1)

    def totals(rows) -> dict:
        return {"tokens": token_weight_sum(lengths[rows], groups.weights[rows])}

    def loss(rows, total):
        steps = int(lengths[rows].max())
        logps, _, mask = policy.token_stats([groups.prompts[i] for i in rows], [groups.completions[i] for i in rows],
                                            temperature=cfg.temperature)
        rows_t = torch.as_tensor(rows)
        pick = lambda x: x[rows_t][:, :steps].to(logps.device)  # noqa: E731 - the columns this micro-batch uses
        value, stats = clipped_token_loss(
            logps, logps.detach() if old is None else pick(old), flat_advantages[rows_t].to(logps.device), mask,
            ref_logps=None if ref is None else pick(ref), kl_coef=kl_coef, clip=cfg.clip,
            weights=weights_tensor(groups.weights[rows], logps.device), total=total["tokens"])
        return value, stats

    return Objective(totals, loss)


def train_rounds(run: MethodRun, name: str, advantages: Advantages, *, kl_in_loss: bool) -> dict:
    """RLOO's and GRPO's rounds. ``advantages(groups, kl)`` turns a round's samples and each reply's summed
    KL to the reference [contexts, k] (None when not computed: no KL, or
    GRPO's one step right after sampling, whose loss reports it) into (the reward it optimises, its advantage), both [contexts, k]."""
    import torch
    from tqdm.auto import tqdm

    from ...training import plan_length

    cfg, policy = run.config, run.policy
    if not policy.has_reward:
        raise ValueError(f"{name} needs a reward model: train one first (the reward stage) and pass it to the policy stage")
    pool, trust = trust_pool(run)
    per_round = cfg.contexts_per_round * cfg.k
    per_epoch = plan_length(per_round, cfg.minibatch_size, 1)
    run.log(f"[policy] {name}: {cfg.rounds} rounds of {cfg.contexts_per_round} contexts x {cfg.k} replies from "
            f"{int((trust > 0).sum())} contexts (trust: {cfg.trust}), kl_coef {cfg.kl_coef}")
    trainer = run.online_trainer(cfg.rounds * cfg.epochs * per_epoch)
    torch.manual_seed(run.seed)
    policy.peft.eval()  # no dropout: the ratio to the sampling policy must start at exactly 1
    history: list[dict] = []
    rounds: list[dict] = []
    bar = tqdm(range(cfg.rounds), desc=f"policy {name}", unit="round", disable=run._quiet())
    for round_ in bar:
        started = time.perf_counter()
        picked, weights = pick_contexts(run, trust, cfg.contexts_per_round, cfg.trust)
        groups = sample_groups(run, list(pool["context"].iloc[picked]), weights, run.seed + 7919 * round_)
        sampled = time.perf_counter()
        # one step right after sampling: the policy's own log-probs, detached, are the sampling policy's
        one_step = cfg.epochs == 1 and per_epoch == 1
        ref = token_logps(run, groups, reference=True) if cfg.kl_coef > 0 else None
        # the sampling policy's log-probs: for the ratio after the first step, and for a KL in the reward (RLOO)
        old = token_logps(run, groups, reference=False) if not one_step or (ref is not None and not kl_in_loss) else None
        # per reply, on the CPU beside the scores (the log-probs are on the model's device)
        kl = None if old is None or ref is None else ((old - ref).cpu() * reply_mask(groups)).sum(1).reshape(groups.scores.shape)
        reward, advantage = advantages(groups, kl)
        objective = clipped_objective(run, groups, advantage, None if one_step else old, ref if kl_in_loss else None,
                                      cfg.kl_coef if kl_in_loss else 0.0)
        plan = [order[start: start + cfg.minibatch_size] for order in (run.rng.permutation(per_round) for _ in range(cfg.epochs))
                for start in range(0, per_round, cfg.minibatch_size)]
        rows = (trainer if trainer is not None else run.trainer(len(plan))).fit(plan, objective)
        history += [{**row, "step": len(history) + i + 1, "round": round_ + 1} for i, row in enumerate(rows)]
        record = {"round": round_ + 1, "score": float(groups.scores.mean()), "reward": float(reward.mean()),
                  "kl_to_reference": None if kl is None else float(kl.mean()), "reply_tokens": float(groups.lengths.float().mean()),
                  "weight": float(weights.mean()), "sample_seconds": round(sampled - started, 3),
                  "update_seconds": round(time.perf_counter() - sampled, 3)}
        rounds.append(record)
        bar.set_postfix(score=f"{record['score']:.2f}", tokens=f"{record['reply_tokens']:.1f}", refresh=False)
    bar.close()
    return {"items": cfg.rounds * per_round, "rounds": rounds, "weight_sum": float(sum(r["weight"] for r in rounds) * per_round),
            "history": history}
