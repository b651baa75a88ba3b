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
