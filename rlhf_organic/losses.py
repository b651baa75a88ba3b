"""Small pure loss functions, every one weighted per example.

Convention: a weighted mean divides by the sum of the weights, so that all weights 1 gives the plain
mean and an example of weight 0 contributes nothing (value and gradient). A batch whose weights sum
to 0 gives a loss of 0 that is still connected to the graph (``backward`` works, all gradients 0).

Every weighted loss also takes ``total``: the denominator to divide by instead of this batch's own weight
sum. The training loop passes the weight sum of the whole optimizer step, so that a step split into
micro-batches (and over processes) adds up to exactly the loss of the unsplit step (``training.Objective``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None = None, total: float | None = None) -> torch.Tensor:
    """sum(w * v) / sum(w); the plain mean when ``weights`` is None; 0 when the weights sum to 0.

    ``total``: divide by this instead of sum(w) (the number of values when ``weights`` is None)."""
    if weights is None:
        weighted = values.sum()
        count = values.numel() if total is None else total
        return weighted / count if count > 0 else weighted * 0.0
    weights = weights.to(values.dtype)
    if total is None:
        total = weights.sum()
    # where() rather than multiplying: a weight-0 example whose value is inf or NaN must not poison the sum
    weighted = torch.where(weights > 0, values * weights, torch.zeros_like(values)).sum()
    return weighted / total if total > 0 else weighted * 0.0


def unbiased(loss: torch.Tensor, flipped_loss: torch.Tensor, flip: float | torch.Tensor | None) -> torch.Tensor:
    """The loss made unbiased under label noise: each label was flipped with probability ``flip`` (per example,
    or one rate for all), so ``((1 - e) loss(label) - e loss(flipped label)) / (1 - 2e)`` has, over the noise,
    the expectation of the loss on the true labels (Natarajan et al. 2013; for preferences rDPO, Chowdhury et
    al. 2024, arXiv 2403.00409). ``flip`` 0 or None gives ``loss`` itself; rates must lie in [0, 1/2), where
    1 / (1 - 2e) stays finite."""
    if flip is None:
        return loss
    e = torch.as_tensor(flip, dtype=loss.dtype, device=loss.device)
    if bool((e < 0).any()) or bool((e >= 0.5).any()):
        raise ValueError(f"label-flip rates must lie in [0, 0.5), got {e.min().item():.3f} to {e.max().item():.3f}")
    return ((1 - e) * loss - e * flipped_loss) / (1 - 2 * e)


def pointwise_bce(scores: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None,
                  total: float | None = None, flip: float | torch.Tensor | None = None) -> torch.Tensor:
    """Weighted binary cross-entropy of scalar scores (logits) against thumbs (1 liked, 0 disliked);
    ``flip``: each label's flip rate (``unbiased``)."""
    labels = labels.to(scores.dtype)
    per_example = F.binary_cross_entropy_with_logits(scores, labels, reduction="none")
    if flip is not None:
        per_example = unbiased(per_example, F.binary_cross_entropy_with_logits(scores, 1 - labels, reduction="none"), flip)
    return weighted_mean(per_example, weights, total)


def bradley_terry(
    chosen: torch.Tensor, rejected: torch.Tensor, weights: torch.Tensor | None = None, margin: float | torch.Tensor = 0.0,
    total: float | None = None, flip: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted Bradley-Terry loss, ``-logsigmoid(r_chosen - r_rejected - margin)`` per pair; ``flip``: each
    pair's probability that its choice was flipped (``unbiased``: the swapped pair's loss enters with -e)."""
    per_pair = -F.logsigmoid(chosen - rejected - margin)
    if flip is not None:
        per_pair = unbiased(per_pair, -F.logsigmoid(rejected - chosen - margin), flip)
    return weighted_mean(per_pair, weights, total)


def reason_bce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None,
               total: float | None = None) -> torch.Tensor:
    """Multi-label dislike-reason loss: BCE per reason, averaged over reasons, then a weighted mean."""
    per_example = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none").mean(-1)
    return weighted_mean(per_example, weights, total)


# --- policy losses -------------------------------------------------------------------------------
# Log-ratios are summed over a completion's tokens: log pi(y|x) - log pi_ref(y|x).

DPO_LOSSES = ("sigmoid", "ipo", "robust")


def dpo(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float | torch.Tensor = 0.0,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
    total: float | None = None,
) -> torch.Tensor:
    """Weighted DPO loss over pairs, with h = chosen_logratio - rejected_logratio:

    - ``sigmoid`` (DPO; conservative DPO with ``label_smoothing`` e): -(1-e) logsig(b h) - e logsig(-b h)
    - ``robust`` (rDPO, unbiased under a label-flip rate e): (-(1-e) logsig(b h) + e logsig(-b h)) / (1 - 2e)

    ``label_smoothing`` e is one rate or one per pair (a user's own flip rate).
    - ``ipo``: (h' - 1/(2b))^2 with h' the difference of per-token mean log-ratios (needs the token counts)
    """
    if loss_type == "ipo":
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("the ipo loss needs chosen_tokens and rejected_tokens (completion lengths)")
        h = chosen_logratios / chosen_tokens.clamp(min=1) - rejected_logratios / rejected_tokens.clamp(min=1)
        per_pair = (h - 1 / (2 * beta)) ** 2
    else:
        h = beta * (chosen_logratios - rejected_logratios)
        e = label_smoothing
        if loss_type == "sigmoid":
            per_pair = -(1 - e) * F.logsigmoid(h) - e * F.logsigmoid(-h)
        elif loss_type == "robust":
            per_pair = unbiased(-F.logsigmoid(h), -F.logsigmoid(-h), e)
        else:
            raise ValueError(f"unknown DPO loss {loss_type!r}; choose one of {', '.join(DPO_LOSSES)}")
    return weighted_mean(per_pair, weights, total)


def kto(
    logratios: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor | float,
    weights: torch.Tensor | None = None,
    *,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    total: float | None = None,
) -> torch.Tensor:
    """Weighted KTO loss over unpaired completions (Ethayarajh et al. 2024, eq. 7).

    Per completion: desirable ``dw * (1 - sigmoid(b (r - kl)))``, undesirable ``uw * (1 - sigmoid(b (kl - r)))``
    with r its log-ratio and ``kl`` the batch's (detached, non-negative) reference point. The per-example
    weight multiplies KTO's class weights; the mean is over the examples' weights.
    """
    kl = torch.as_tensor(kl, dtype=logratios.dtype, device=logratios.device).detach()
    desirable = desirable.to(torch.bool)
    value = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (logratios - kl))),
        undesirable_weight * (1 - torch.sigmoid(beta * (kl - logratios))),
    )
    return weighted_mean(value, weights, total)


def token_nll(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None,
              total: float | None = None) -> torch.Tensor:
    """Cross-entropy of ``labels`` [batch, seq] under ``logits`` [batch, seq, vocab] (already aligned),
    a mean over the masked tokens with each token weighted by its sequence's weight."""
    nll = F.cross_entropy(logits.transpose(1, 2).float(), labels.clamp(min=0), reduction="none")
    return token_mean(nll, mask, weights, total)


def token_mean(values: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None,
               total: float | None = None) -> torch.Tensor:
    """Mean of per-token ``values`` [batch, seq] over the masked tokens, each weighted by its sequence's weight
    (``total``: the step's sum of token weights, ``token_weight_sum`` over all its sequences)."""
    return weighted_mean(values[mask.bool()], _token_weights(weights, mask), total)


def token_weight_sum(tokens, weights=None) -> float:
    """The denominator of ``token_mean``: sum over sequences of (masked tokens x the sequence's weight)."""
    import numpy as np

    tokens = np.asarray(tokens, np.float64)
    return float(tokens.sum() if weights is None else (tokens * np.asarray(weights, np.float64)).sum())


def cringe(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    k: int = 5,
    generator: torch.Generator | None = None,
    total: float | None = None,
) -> torch.Tensor:
    """The Cringe contrastive loss on negative sequences (Adolphs et al. 2022), token level.

    For each token y_t of a bad sequence, a positive token s+ is sampled from the model's top-k
    predictions other than y_t (softmax over their logits, no gradient through the sampling), and
    the loss is ``-log(exp(s+) / (exp(s+) + exp(s_yt))) = softplus(s_yt - s+)``. The mean is over the
    masked tokens, each weighted by its sequence's weight.
    """
    labels = labels.clamp(min=0)
    own = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    top_values, top_ids = logits.topk(k + 1, dim=-1)
    # drop y_t from the candidates (if present), keep the k best of the rest
    is_label = top_ids == labels.unsqueeze(-1)
    candidates = top_values.masked_fill(is_label, float("-inf"))
    candidates = candidates.sort(dim=-1, descending=True).values[..., :k]
    with torch.no_grad():
        probs = torch.softmax(candidates.float(), dim=-1).reshape(-1, k)
        pick = torch.multinomial(probs, 1, generator=generator).reshape(candidates.shape[:-1] + (1,))
    positive = candidates.gather(-1, pick).squeeze(-1)
    per_token = F.softplus(own - positive)
    return weighted_mean(per_token[mask.bool()], _token_weights(weights, mask), total)


def _token_weights(weights: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor | None:
    if weights is None:
        return None
    return weights.unsqueeze(-1).expand(mask.shape)[mask.bool()]


# --- PPO (Schulman et al. 2017; the RLHF form of Ouyang et al. 2022) ------------------------------
# Per-token tensors are [batch, steps] over the completion tokens only, left-aligned: step t is the
# t-th generated token, and ``mask`` is 1 for the tokens a row really has (its length), 0 after.


def masked_mean(values: torch.Tensor, mask: torch.Tensor, total: float | None = None) -> torch.Tensor:
    """Mean over the tokens where ``mask`` is 1 (0 when there are none); ``total``: divide by this count instead."""
    mask = mask.to(values.dtype)
    total = mask.sum() if total is None else total
    return (values * mask).sum() / total if total > 0 else (values * mask).sum()


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """``values`` scaled to unit variance over the masked tokens (and centred unless ``shift_mean`` is
    false); padded positions are returned as 0."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    out = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask.to(values.dtype)


def token_rewards(scores: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor,
                  kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rewards, kl) per token: ``-kl_coef * (log pi - log pi_ref)`` at every token, plus the sequence's
    reward-model score at its last token. ``kl`` is the per-token estimate log pi - log pi_ref."""
    mask = mask.to(logps.dtype)
    kl = (logps - ref_logps) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(1).long() - 1).clamp(min=0)
    rewards = rewards.clone()
    rewards[torch.arange(len(scores)), last] += scores.to(rewards.dtype) * (mask.sum(1) > 0).to(rewards.dtype)
    return rewards, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) backwards over each row's tokens.

    delta_t = r_t + gamma * V_{t+1} - V_t (V after a row's last token is 0: the episode ends), and
    A_t = delta_t + gamma * lam * A_{t+1}. Returns (advantages, returns = advantages + values), 0 where
    ``mask`` is 0."""
    mask = mask.to(values.dtype)
    steps = rewards.shape[1]
    advantages = torch.zeros_like(values)
    running = torch.zeros(values.shape[0], dtype=values.dtype, device=values.device)
    next_value = torch.zeros_like(running)
    for t in reversed(range(steps)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
        next_value = values[:, t] * mask[:, t]
    return advantages, (advantages + values) * mask


def ppo_policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                    cliprange: float = 0.2, total: float | None = None) -> tuple[torch.Tensor, dict]:
    """The clipped surrogate: mean over tokens of max(-A r, -A clip(r, 1 - eps, 1 + eps)), r = pi / pi_old.
    Also returns the clip fraction, the approximate KL to the old policy (mean of (log r)^2 / 2) and the
    mean ratio, for logging and early stopping. ``total``: the token count to divide by (``masked_mean``)."""
    log_ratio = (logps - old_logps) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask, total)
    with torch.no_grad():
        stats = {"clipfrac": float(masked_mean((clipped > unclipped).to(logps.dtype), mask, total)),
                 "approx_kl": float(masked_mean(0.5 * log_ratio**2, mask, total)),
                 "ratio": float(masked_mean(ratio, mask, total))}
    return loss, stats


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                   cliprange_value: float = 0.2, total: float | None = None) -> tuple[torch.Tensor, dict]:
    """The clipped value loss: 0.5 * mean over tokens of max((V - R)^2, (V_clipped - R)^2), where V_clipped
    stays within ``cliprange_value`` of the rollout's value."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    losses = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    loss = 0.5 * masked_mean(losses, mask, total)
    with torch.no_grad():
        stats = {"value_clipfrac": float(masked_mean(((clipped - returns) ** 2 > (values - returns) ** 2).to(values.dtype),
                                                     mask, total))}
    return loss, stats


# --- group-relative online RL: RLOO (Ahmadian et al. 2024) and GRPO (Shao et al. 2024) -------------
# Rewards are [contexts, k]: k replies sampled for each context. Advantages are one number per reply,
# shared by all of its tokens.


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out: each reply's reward less the mean reward of the other k - 1 replies to its
    context (Ahmadian et al. 2024, eq. 5). Unbiased, as the baseline does not depend on the reply itself;
    k = 1 has no other reply and gives 0 (no signal) rather than a division by 0."""
    k = rewards.shape[1]
    if k < 2:
        return torch.zeros_like(rewards)
    others = (rewards.sum(1, keepdim=True) - rewards) / (k - 1)
    return rewards - others


GRPO_SCALES = ("group", "batch", "none")


def grpo_advantages(rewards: torch.Tensor, scale_rewards: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """GRPO's group-relative advantages: reward less its context's mean reward, divided by the standard
    deviation of its group (``group``, Shao et al. 2024 eq. 3), of the whole batch (``batch``) or by
    nothing (``none``; Dr. GRPO, Liu et al. 2025, which finds the group scaling favours easy and hopeless
    contexts). The deviations are unbiased (n - 1); a group of one, or of equal rewards, gives 0, not NaN."""
    if scale_rewards not in GRPO_SCALES:
        raise ValueError(f"unknown scale_rewards {scale_rewards!r}; choose one of {', '.join(GRPO_SCALES)}")
    centred = rewards - rewards.mean(1, keepdim=True)
    if scale_rewards == "none":
        return centred
    if scale_rewards == "group":
        std = (centred.pow(2).sum(1, keepdim=True) / max(rewards.shape[1] - 1, 1)).sqrt()
    else:
        std = (rewards - rewards.mean()).pow(2).sum().div(max(rewards.numel() - 1, 1)).sqrt()
    return centred / (std + eps)


def length_penalised(rewards: torch.Tensor, lengths: torch.Tensor, cap: int = 0, coef: float = 0.0) -> torch.Tensor:
    """``rewards`` less ``coef`` per reply token beyond ``cap``: the guard against a reward model that pays
    for length (RLUF, Han et al. 2025, saw replies grow under its reward). ``coef`` 0 leaves them as they are."""
    over = (lengths.to(rewards.dtype) - cap).clamp(min=0)
    return rewards - coef * over


def clipped_token_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
                       ref_logps: torch.Tensor | None = None, kl_coef: float = 0.0, clip: float = 0.2,
                       weights: torch.Tensor | None = None, total: float | None = None) -> tuple[torch.Tensor, dict]:
    """The clipped policy-gradient loss of RLOO and GRPO, over tokens.

    ``logps``, ``old_logps`` (the sampling policy's, no gradient), ``ref_logps``, ``mask``: [batch, steps] over
    the reply tokens; ``advantages``, ``weights``: [batch], one per reply. Per token, with r = pi / pi_old,
    ``max(-A r, -A clip(r, 1 - clip, 1 + clip))`` (PPO's surrogate; r is 1 on fresh samples, where the
    gradient is the plain policy gradient -A grad log pi), plus with ``ref_logps`` ``kl_coef`` x the k3
    estimate of KL(pi || pi_ref), exp(q) - q - 1 with q = log pi_ref - log pi (Schulman 2020; GRPO eq. 4):
    non-negative and unbiased on samples from pi. The mean is over tokens, each weighted by its reply's
    weight (``token_mean``); ``total`` is the step's sum of token weights, so that micro-batches add up
    to the whole step. Returns the loss and floats (clip fraction, ratio, KL) that add up the same way."""
    mask = mask.bool()
    zero = torch.zeros_like(logps)
    log_ratio = torch.where(mask, logps - old_logps.detach(), zero)
    ratio = torch.exp(log_ratio)
    a = advantages.detach().to(logps.dtype)[:, None]
    unclipped, clipped = -a * ratio, -a * ratio.clamp(1 - clip, 1 + clip)
    per_token = torch.maximum(unclipped, clipped)
    kl = zero
    if ref_logps is not None:
        q = torch.where(mask, ref_logps.detach() - logps, zero)
        kl = torch.exp(q) - q - 1
        per_token = per_token + kl_coef * kl
    loss = token_mean(per_token, mask, weights, total)
    with torch.no_grad():
        stats = {"clipfrac": float(token_mean((clipped > unclipped).to(logps.dtype), mask, weights, total)),
                 "ratio": float(token_mean(ratio, mask, weights, total)),
                 "kl": float(token_mean(kl, mask, weights, total))}
    return loss, stats
