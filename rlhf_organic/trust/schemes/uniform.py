"""``uniform``: believe everyone fully (standard training, the baseline every scheme must beat)."""

import numpy as np

from ...contracts import SchemeContract
from ..scheme import SchemeConfig, TrustResult

NAME = "uniform"
DESCRIPTION = "everyone 1 (standard training)"


class Config(SchemeConfig):
    pass


def compute(data, cfg: Config, ctx) -> TrustResult:
    return TrustResult(trust=np.ones(data.n_users), weight=np.ones(data.n_examples))


# It judges no one: labels without a user id, and A/B choices without any thumbs, are fine (trust/stage.py).
CONTRACT = SchemeContract(name=NAME, description=DESCRIPTION, settings=Config, compute=compute,
                          reference=False, judges_users=False, label_weights=False)
