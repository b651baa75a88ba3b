"""How well a scheme's trust separates trolls from helpers, against ground truth. Pure numpy.

User level: ROC AUC of ``1 - trust`` for trolls, and precision / recall of trolls at the scheme's
cut (trust < cut means "distrusted"), over users with feedback. Example level, where the ground
truth says which labels were corrupted: the same with ``1 - weight``. And the share of helper
feedback weight kept (1 is best: no honest label lost).
"""

from __future__ import annotations

import numpy as np


def roc_auc(scores, positives) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half).

    None when only one class is present.
    """
    from scipy.stats import rankdata

    scores, positives = np.asarray(scores, np.float64), np.asarray(positives, bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_recall(flagged, positives) -> tuple[float | None, float | None]:
    """(precision, recall) of ``flagged`` as a detector of ``positives``; None where undefined."""
    flagged, positives = np.asarray(flagged, bool), np.asarray(positives, bool)
    hits = int((flagged & positives).sum())
    precision = hits / int(flagged.sum()) if flagged.any() else None
    recall = hits / int(positives.sum()) if positives.any() else None
    return precision, recall


def detection(score_bad, is_bad, flagged) -> dict:
    precision, recall = precision_recall(flagged, is_bad)
    return {"auc": roc_auc(score_bad, is_bad), "precision": precision, "recall": recall,
            "n": int(len(is_bad)), "n_bad": int(np.sum(is_bad))}


def trust_metrics(
    trust, weight, n_feedback, cut: float, *, user_is_troll=None, example_user_is_troll=None,
    example_corrupted=None, example_poisoned=None,
) -> dict:
    """The metrics of one scheme. Ground-truth arrays are aligned with ``trust`` (users) and
    ``weight`` (examples); entries that are NaN / None are left out (users or labels the ground
    truth does not cover)."""
    trust, weight = np.asarray(trust, np.float64), np.asarray(weight, np.float64)
    with_feedback = np.asarray(n_feedback) > 0
    out: dict = {
        "users": int(len(trust)),
        "users_with_feedback": int(with_feedback.sum()),
        "examples": int(len(weight)),
        "mean_trust": float(trust[with_feedback].mean()) if with_feedback.any() else None,
        "distrusted_users": int((trust[with_feedback] < cut).sum()),
        "weight_kept": float(weight.mean()) if len(weight) else None,
    }
    if user_is_troll is not None:
        known = with_feedback & ~np.isnan(np.asarray(user_is_troll, np.float64))
        troll = np.asarray(user_is_troll, np.float64)[known] > 0.5
        out["user"] = detection(1 - trust[known], troll, trust[known] < cut)
    if example_user_is_troll is not None and len(weight):
        known = ~np.isnan(np.asarray(example_user_is_troll, np.float64))
        troll = np.asarray(example_user_is_troll, np.float64) > 0.5
        helper = known & ~troll
        out["helper_weight_kept"] = float(weight[helper].mean()) if helper.any() else None
        out["troll_weight_kept"] = float(weight[known & troll].mean()) if (known & troll).any() else None
    if example_corrupted is not None and len(weight):
        corrupted = np.asarray(example_corrupted, np.float64)
        known = ~np.isnan(corrupted)
        out["example"] = detection(1 - weight[known], corrupted[known] > 0.5, weight[known] < cut)
    if example_poisoned is not None and len(weight):
        # the labels an attacker planted (a trigger backdoor, rewarded manipulation): the share of their weight
        # that reaches training; None when the ground truth marks none
        poisoned = np.nan_to_num(np.asarray(example_poisoned, np.float64), nan=0.0) > 0.5
        out["poisoned_weight_kept"] = float(weight[poisoned].mean()) if poisoned.any() else None
    return out
