"""``soft_purr``: Soft PURR (Ju et al. 2022). Judge a label by itself and by its user's other labels.

score(x) = a * f(x) + (1 - a) * mean of f over the same user's *other* labels, where
f = y p + (1 - y)(1 - p) is the held-out reference's agreement. A label is kept when its score is at
least ``threshold``. A user's only label is judged by f alone. Trust: the share of labels kept.
"""

import numpy as np
from pydantic import Field

from ...contracts import SchemeContract
from ..scheme import SchemeConfig, TrustResult, agreement, hard

NAME = "soft_purr"
DESCRIPTION = "Soft PURR: a label's agreement mixed with its user's mean agreement on other labels"
TUNE = ("threshold", (0.3, 0.4, 0.5, 0.6, 0.7))  # (setting, candidates) for select_on_gold


class Config(SchemeConfig):
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the label's own agreement (a)")
    threshold: float = Field(0.5, ge=0, le=1, description="keep a label whose score is >= this")


def purr_scores(f: np.ndarray, user: np.ndarray, n_users: int, alpha: float) -> np.ndarray:
    sums = np.bincount(user, weights=f, minlength=n_users)
    counts = np.bincount(user, minlength=n_users)
    others = counts[user] - 1
    mean_others = np.where(others > 0, (sums[user] - f) / np.maximum(others, 1), f)
    return alpha * f + (1 - alpha) * mean_others


def compute(data, cfg: Config, ctx) -> TrustResult:
    p = ctx.held_out(data)
    f = agreement(p, data.label)
    score = purr_scores(f, data.user, data.n_users, cfg.alpha)
    weight = hard(score >= cfg.threshold)
    return TrustResult(
        trust=data.per_user_mean(weight, default=1.0),
        weight=weight,
        user_evidence={"mean_agreement": data.per_user_mean(f, default=float("nan"))},
        example_evidence={"reference_p": p, "agreement": f, "purr_score": score},
    )


CONTRACT = SchemeContract(name=NAME, description=DESCRIPTION, settings=Config, compute=compute, tune=TUNE)
