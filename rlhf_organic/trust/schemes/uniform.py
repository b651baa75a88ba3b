"""``uniform``: believe everyone fully (standard training, the baseline every scheme must beat)."""

import numpy as np

from ..scheme import SchemeConfig, TrustResult

NAME = "uniform"
DESCRIPTION = "everyone 1 (standard training)"
# It judges no one: labels without a user id, and A/B choices without any thumbs, are fine (trust/stage.py).
JUDGES_USERS = False


class Config(SchemeConfig):
    pass


def compute(data, cfg: Config, ctx) -> TrustResult:
    return TrustResult(trust=np.ones(data.n_users), weight=np.ones(data.n_examples))
