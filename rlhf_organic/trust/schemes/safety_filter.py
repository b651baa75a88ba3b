"""``safety_filter``: the BB3x loader's rule. Drop whatever a user with a flagged message touched.

``level: user`` gives trust 0 to every user with any own message flagged unsafe (by either safety
detector); ``level: conversation`` keeps the user but drops the feedback given in conversations
with a flagged user message, and the user's trust is then the share of their feedback kept.
"""

from typing import Literal

import numpy as np
from pydantic import Field

from ...contracts import SchemeContract
from ..scheme import SchemeConfig, TrustResult, hard

NAME = "safety_filter"
DESCRIPTION = "0 for users (or conversations) with a message flagged unsafe, as the BB3x loader does"


class Config(SchemeConfig):
    level: Literal["user", "conversation"] = Field("user", description="what a flagged message removes")


def flagged_rate(data) -> np.ndarray:
    """Share of each user's own messages flagged unsafe (0 for users without messages)."""
    n = data.user_counts["n_user_messages"]
    return np.where(n > 0, data.user_counts["n_unsafe_user_messages"] / np.maximum(n, 1), 0.0)


def compute(data, cfg: Config, ctx) -> TrustResult:
    flagged = data.user_counts["n_unsafe_user_messages"]
    evidence = {"n_unsafe_user_messages": flagged, "flagged_rate": flagged_rate(data)}
    if cfg.level == "user":
        trust = hard(flagged == 0)
        return TrustResult(trust, trust[data.user], user_evidence=evidence)
    weight = hard(~data.adversarial)
    trust = data.per_user_mean(weight, default=1.0)
    return TrustResult(trust, weight, user_evidence=evidence)


CONTRACT = SchemeContract(name=NAME, description=DESCRIPTION, settings=Config, compute=compute, reference=False, message_flags=True)
