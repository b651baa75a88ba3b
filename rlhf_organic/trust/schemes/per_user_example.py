"""``per_user_example``: drop bad users, then bad labels among the rest (the study's best method).

Step 1 is ``per_user``. With ``refit`` (the default) the k-fold reference is then trained again on
the kept users only, so trolls no longer pull its predictions; with ``rounds`` > 1 step 1 is repeated
against that cleaner reference (a dropped user can come back), until the kept users stop changing.
Step 2 drops the kept users' labels the last reference disagrees with (``per_example``). Trust is 0
for dropped users, otherwise the share of the user's labels kept.
"""

import numpy as np
from pydantic import Field

from ...contracts import SchemeContract
from ..scheme import SchemeConfig, TrustResult, agreement, hard
from .per_user import disagreement_rate

NAME = "per_user_example"
DESCRIPTION = "drop users who disagree too often, then labels the (refitted) reference disagrees with"
TUNE = ("user_threshold", (0.2, 0.3, 0.4, 0.5, 0.6))  # (setting, candidates) for select_on_gold


class Config(SchemeConfig):
    user_threshold: float = Field(0.3, ge=0, le=1, description="drop a user whose disagreement rate is above this")
    example_threshold: float = Field(
        0.2, ge=0, le=1, description="then keep a label when agreement f >= this (low: keep honest labels on hard replies)"
    )
    refit: bool = Field(True, description="retrain the reference without the dropped users before step 2")
    rounds: int = Field(3, ge=1, le=20, description="user-removal rounds, each against the reference refitted on the last")


def compute(data, cfg: Config, ctx) -> TrustResult:
    p = ctx.held_out(data)
    for _ in range(cfg.rounds if cfg.refit else 1):
        rate = disagreement_rate(data, agreement(p, data.label))
        user_kept = rate <= cfg.user_threshold
        kept = user_kept[data.user]
        refit = ctx.held_out(data, keep=kept) if cfg.refit and kept.any() else p
        if refit is p:  # same users as last round: converged
            break
        p = refit
    f = agreement(p, data.label)
    weight = hard(kept & (f >= cfg.example_threshold))
    trust = np.where(user_kept, data.per_user_mean(weight, default=1.0), 0.0)
    return TrustResult(
        trust=trust,
        weight=weight,
        user_evidence={"disagreement_rate": rate},
        example_evidence={"reference_p": ctx.held_out(data), "refit_p": p, "agreement": f},
    )


CONTRACT = SchemeContract(name=NAME, description=DESCRIPTION, settings=Config, compute=compute, tune=TUNE)
