"""``per_user``: drop every label of a user who disagrees with the held-out reference too often.

A label disagrees when the reference's agreement f < 0.5; a user whose disagreement rate is above
``threshold`` gets trust 0, everyone else 1 (users without feedback: 1, nothing to judge).
"""

import numpy as np
from pydantic import Field

from ...contracts import SchemeContract
from ..scheme import SchemeConfig, TrustResult, agreement, hard

NAME = "per_user"
DESCRIPTION = "drop users whose labels disagree with the k-fold reference too often"
TUNE = ("threshold", (0.2, 0.3, 0.4, 0.5, 0.6))  # (setting, candidates) for select_on_gold


class Config(SchemeConfig):
    threshold: float = Field(0.5, ge=0, le=1, description="drop a user whose disagreement rate is above this")


def disagreement_rate(data, f: np.ndarray) -> np.ndarray:
    """Share of each user's labels with f < 0.5 (0 for users without feedback)."""
    return data.per_user_mean((f < 0.5).astype(np.float64), default=0.0)


def compute(data, cfg: Config, ctx) -> TrustResult:
    p = ctx.held_out(data)
    f = agreement(p, data.label)
    rate = disagreement_rate(data, f)
    trust = hard(rate <= cfg.threshold)
    return TrustResult(
        trust=trust,
        weight=trust[data.user],
        user_evidence={"disagreement_rate": rate},
        example_evidence={"reference_p": p, "agreement": f},
    )


CONTRACT = SchemeContract(name=NAME, description=DESCRIPTION, settings=Config, compute=compute, label_weights=False, tune=TUNE)
