"""Small pure loss functions, every one weighted per example.

Convention: a weighted mean divides by the sum of the weights, so that all weights 1 gives the plain
mean and an example of weight 0 contributes nothing (value and gradient). A batch whose weights sum
to 0 gives a loss of 0 that is still connected to the graph (``backward`` works, all gradients 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """sum(w * v) / sum(w); the plain mean when ``weights`` is None; 0 when the weights sum to 0."""
    if weights is None:
        return values.mean()
    weights = weights.to(values.dtype)
    total = weights.sum()
    # where() rather than multiplying: a weight-0 example whose value is inf or NaN must not poison the sum
    weighted = torch.where(weights > 0, values * weights, torch.zeros_like(values)).sum()
    return weighted / total if total > 0 else weighted * 0.0


def pointwise_bce(scores: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted binary cross-entropy of scalar scores (logits) against thumbs (1 liked, 0 disliked)."""
    per_example = F.binary_cross_entropy_with_logits(scores, labels.to(scores.dtype), reduction="none")
    return weighted_mean(per_example, weights)


def bradley_terry(
    chosen: torch.Tensor, rejected: torch.Tensor, weights: torch.Tensor | None = None, margin: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """Weighted Bradley-Terry loss, ``-logsigmoid(r_chosen - r_rejected - margin)`` per pair."""
    return weighted_mean(-F.logsigmoid(chosen - rejected - margin), weights)


def reason_bce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-label dislike-reason loss: BCE per reason, averaged over reasons, then a weighted mean."""
    per_example = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none").mean(-1)
    return weighted_mean(per_example, weights)


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
    label_smoothing: float = 0.0,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted DPO loss over pairs, with h = chosen_logratio - rejected_logratio:

    - ``sigmoid`` (DPO; conservative DPO with ``label_smoothing`` e): -(1-e) logsig(b h) - e logsig(-b h)
    - ``robust`` (rDPO, unbiased under a label-flip rate e): (-(1-e) logsig(b h) + e logsig(-b h)) / (1 - 2e)
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
            if not 0 <= e < 0.5:
                raise ValueError(f"the robust loss needs 0 <= label_smoothing < 0.5, got {e}")
            per_pair = (-(1 - e) * F.logsigmoid(h) + e * F.logsigmoid(-h)) / (1 - 2 * e)
        else:
            raise ValueError(f"unknown DPO loss {loss_type!r}; choose one of {', '.join(DPO_LOSSES)}")
    return weighted_mean(per_pair, weights)


def kto(
    logratios: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor | float,
    weights: torch.Tensor | None = None,
    *,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
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
    return weighted_mean(value, weights)


def token_nll(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of ``labels`` [batch, seq] under ``logits`` [batch, seq, vocab] (already aligned),
    a mean over the masked tokens with each token weighted by its sequence's weight."""
    nll = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
    return weighted_mean(nll[mask.bool()], _token_weights(weights, mask))


def cringe(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    k: int = 5,
    generator: torch.Generator | None = None,
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
    return weighted_mean(per_token[mask.bool()], _token_weights(weights, mask))


def _token_weights(weights: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor | None:
    if weights is None:
        return None
    return weights.unsqueeze(-1).expand(mask.shape)[mask.bool()]
