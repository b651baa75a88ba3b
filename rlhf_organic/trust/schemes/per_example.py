"""``per_example``: drop each label the held-out reference disagrees with (helpers/trolls study).

An example is kept when the reference's agreement with its label, f = y p + (1 - y)(1 - p), is at
least ``threshold``. A user's trust is the share of their labels kept (1 without feedback).
"""

from pydantic import Field

from ...contracts import SchemeContract
from ..scheme import SchemeConfig, TrustResult, agreement, hard

NAME = "per_example"
DESCRIPTION = "drop labels the k-fold reference disagrees with"
TUNE = ("threshold", (0.3, 0.4, 0.5, 0.6, 0.7))  # (setting, candidates) for select_on_gold


class Config(SchemeConfig):
    threshold: float = Field(0.5, ge=0, le=1, description="keep a label when the reference's agreement f >= this")


def compute(data, cfg: Config, ctx) -> TrustResult:
    p = ctx.held_out(data)
    f = agreement(p, data.label)
    weight = hard(f >= cfg.threshold)
    return TrustResult(
        trust=data.per_user_mean(weight, default=1.0),
        weight=weight,
        user_evidence={"mean_agreement": data.per_user_mean(f, default=float("nan"))},
        example_evidence={"reference_p": p, "agreement": f},
    )


CONTRACT = SchemeContract(name=NAME, description=DESCRIPTION, settings=Config, compute=compute, tune=TUNE)
