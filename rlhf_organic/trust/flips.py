"""Each user's label-flip rate: how often their labels say the opposite of what an honest label would.

Trust weights decide how much a user's labels count; a flip rate says how to read the labels that do
count. The losses correct each label for its user's rate (``losses.unbiased``: the loss of Natarajan et
al. 2013, and for preferences rDPO, Chowdhury et al. 2024, arXiv 2403.00409, with each user's own rate
instead of one global one), so that, in expectation over the flips, a user who flips a fifth of their
labels teaches what an honest user would.

Estimate. The evidence is the held-out reference (the trust stage's k-fold model): a label disagrees
when the reference's P(thumbs up) falls on the other side of 1/2. The reference errs too, at a rate
``r`` measured on the labels of the users the scheme trusts (trust >= 1/2, the honest majority the
agreement schemes assume). If a user flips with rate e independently of the reference's errors, the
chance of disagreeing is d = r (1 - e) + (1 - r) e, so e = (d - r) / (1 - 2r). Each user's d is shrunk
toward r by ``prior_strength`` pseudo-labels, so that a user with a few labels gets a rate near 0 (the
plain loss) rather than a noisy guess, and e is kept in [0, ``cap``]: below 1/2, where the unbiased
loss's 1 / (1 - 2e) diverges. Users who flip more than that are the trust weights' job.
"""

from __future__ import annotations

import numpy as np

PRIOR_STRENGTH = 10.0  # pseudo-labels pulling each user's disagreement toward the reference's own error rate
CAP = 0.45


def flip_rates(p: np.ndarray, label: np.ndarray, user: np.ndarray, n_users: int, trust: np.ndarray,
               prior_strength: float = PRIOR_STRENGTH, cap: float = CAP) -> tuple[np.ndarray, float]:
    """(flip rate per user [n_users], the reference's disagreement rate with trusted users' labels).

    ``p``: the held-out reference's P(thumbs up) per label; ``label``: 1 up / 0 down; ``user``: each
    label's user index (-1: no user, not counted); ``trust``: the scheme's trust per user. All rates are
    0 where the reference is no better than a coin on the trusted labels (r >= 1/2: nothing to measure
    against) or where no label has a user.
    """
    p, label, user = np.asarray(p, np.float64), np.asarray(label), np.asarray(user, np.int64)
    known = user >= 0
    disagree = ((p >= 0.5) != (label > 0)).astype(np.float64)[known]
    user = user[known]
    trusted = np.asarray(trust, np.float64)[user] >= 0.5
    basis = disagree[trusted] if trusted.any() else disagree
    if not len(basis):
        return np.zeros(n_users), float("nan")
    r = float(basis.mean())
    if r >= 0.5:
        return np.zeros(n_users), r
    n = np.bincount(user, minlength=n_users).astype(np.float64)
    k = np.bincount(user, weights=disagree, minlength=n_users)
    d = (k + prior_strength * r) / (n + prior_strength)
    return np.clip((d - r) / (1 - 2 * r), 0.0, cap), r
