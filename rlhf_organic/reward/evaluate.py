"""Reward-model metrics on held-out data. Pure numpy.

- pointwise: ROC AUC of the score against the thumbs, accuracy of ``score > 0``, and expected
  calibration error of ``sigmoid(score)`` (10 equal-width bins);
- pairwise: share of A/B choices where the chosen reply scores higher;
- the same per group of users (trusted / distrusted, by user type when ground truth exists);
- clean: the same against clean labels (simulator truth, crowdworker gold), the number that says
  whether trust weighting worked, since the held-out thumbs include the trolls' own.
"""

from __future__ import annotations

import numpy as np

from ..trust.metrics import roc_auc


def sigmoid(x) -> np.ndarray:
    return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


def calibration_error(p, labels, bins: int = 10) -> float | None:
    """Expected calibration error: sum over bins of (share of items) * |mean p - mean label|."""
    p, labels = np.asarray(p, np.float64), np.asarray(labels, np.float64)
    if len(p) == 0:
        return None
    which = np.minimum((p * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(p[inside].mean() - labels[inside].mean())
    return float(error)


def pointwise_metrics(scores, labels) -> dict:
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, np.float64)
    if len(scores) == 0:
        return {"n": 0}
    return {
        "n": int(len(scores)),
        "auc": roc_auc(scores, labels > 0.5),
        "accuracy": float(np.mean((scores > 0) == (labels > 0.5))),
        "calibration_error": calibration_error(sigmoid(scores), labels),
    }


def pairwise_metrics(chosen, rejected) -> dict:
    chosen, rejected = np.asarray(chosen, np.float64), np.asarray(rejected, np.float64)
    if len(chosen) == 0:
        return {"n": 0}
    return {"n": int(len(chosen)), "accuracy": float(np.mean(chosen > rejected))}


def by_group(groups, metric, *columns) -> dict:
    """``metric`` on the rows of each group (sorted by name)."""
    groups = np.asarray(groups, dtype=object)
    return {str(g): metric(*(np.asarray(c)[groups == g] for c in columns)) for g in sorted(set(groups.tolist()), key=str)}
