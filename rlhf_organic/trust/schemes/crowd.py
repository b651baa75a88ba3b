"""``crowd``: annotator reliability by one-coin Dawid-Skene, vectorised, for items several users judged.

An *item* is a bot reply text (case and spacing normalised, ``item: response``) or each example on
its own (``item: example``). Each user has one accuracy a_u; each item a hidden good/bad label.
EM alternates the items' posteriors q_i = P(good) and the users' accuracies (with a Beta prior of
mean ``prior_accuracy``); a label is judged against its item's posterior *without* its own vote.
Trust is max(0, 2 a_u - 1): 1 for a perfect rater, 0 for a coin flip or worse (MACE's "not spamming" reading of one-coin accuracy).

Organic data has one rater per item almost always, and then a user's labels carry no information
about their accuracy (a lone label always agrees with itself; crowd-kit's Dawid-Skene scores such
users at chance). Two ways out, both reported in the notes: with ``reference_as_rater`` (default)
the k-fold reference model joins every item as one more rater, which makes the EM work on
single-rater data (as MBEM does); without it, labels on single-rater items are ignored and users
with no other labels get ``no_evidence_trust``.
"""

import re
from typing import Literal

import numpy as np
from pydantic import Field

from ...contracts import SchemeContract
from ..scheme import SchemeConfig, TrustResult

NAME = "crowd"
DESCRIPTION = "one-coin Dawid-Skene over items several users judged (plus the reference as a rater)"
_EPS = 1e-6


class Config(SchemeConfig):
    item: Literal["response", "example"] = Field("response", description="what counts as the same item")
    reference_as_rater: bool = Field(True, description="the k-fold reference joins every item as a rater")
    prior_accuracy: float = Field(0.7, gt=0.5, lt=1, description="mean of the Beta prior on user accuracy")
    prior_strength: float = Field(2.0, gt=0, description="pseudo-labels of that prior")
    no_evidence_trust: float = Field(1.0, ge=0, le=1, description="trust of users none of whose items has another rater")
    max_iter: int = Field(50, ge=1)
    tol: float = Field(1e-6, gt=0)


def item_index(data, how: str) -> np.ndarray:
    if how == "example":
        return np.arange(data.n_examples)
    keys = [re.sub(r"\s+", " ", t.strip().lower()) for t in data.text]
    _, idx = np.unique(np.asarray(keys, dtype=object), return_inverse=True)
    return idx


def _logit(x):
    x = np.clip(x, _EPS, 1 - _EPS)
    return np.log(x / (1 - x))


def dawid_skene(item, user, label, n_users, cfg: Config, item_prior_logit=None):
    """(accuracy per user, q per item, iterations). ``item_prior_logit``: the reference rater's vote per item."""
    n_items = int(item.max()) + 1 if len(item) else 0
    y = np.asarray(label, np.float64)
    sign = 2 * y - 1
    extra = np.zeros(n_items) if item_prior_logit is None else item_prior_logit
    votes = np.bincount(item, weights=y, minlength=n_items)
    counts = np.bincount(item, minlength=n_items)
    q = (votes + (0 if item_prior_logit is None else 1 / (1 + np.exp(-extra)))) / (
        counts + (0 if item_prior_logit is None else 1)
    )
    a0 = cfg.prior_accuracy * cfg.prior_strength
    b0 = (1 - cfg.prior_accuracy) * cfg.prior_strength
    n_u = np.bincount(user, minlength=n_users)
    acc = np.full(n_users, cfg.prior_accuracy)
    iterations = 0
    own = np.zeros(len(item))  # each label's own vote in its item's logit, left out when judging it
    logit_q = _logit(q)
    for iterations in range(1, cfg.max_iter + 1):  # noqa: B007 - returned: the number of rounds run
        # Judge every label against the *other* raters of its item: a lone label would agree with itself.
        q_others = 1 / (1 + np.exp(-(logit_q[item] - own)))
        agree = y * q_others + (1 - y) * (1 - q_others)
        acc = (np.bincount(user, weights=agree, minlength=n_users) + a0) / (n_u + a0 + b0)
        pi = float(np.clip(q.mean(), _EPS, 1 - _EPS)) if n_items else 0.5
        own = sign * _logit(acc)[user]
        logit_q = _logit(pi) + extra + np.bincount(item, weights=own, minlength=n_items)
        new_q = 1 / (1 + np.exp(-logit_q))
        change = float(np.max(np.abs(new_q - q))) if n_items else 0.0
        q = new_q
        if change < cfg.tol:
            break
    return acc, q, iterations


def compute(data, cfg: Config, ctx) -> TrustResult:
    item = item_index(data, cfg.item)
    n_items = int(item.max()) + 1 if len(item) else 0
    raters = np.bincount(item, minlength=n_items)
    multi = raters[item] >= 2
    share = float(multi.mean()) if len(multi) else 0.0
    notes = [f"{share:.1%} of labels are on items judged by more than one user"]
    evidence = {}
    if cfg.reference_as_rater:
        p = ctx.held_out(data)
        # The reference's vote as a likelihood ratio: its logit minus its base rate, which the EM's
        # class prior already counts.
        ref = np.bincount(item, weights=_logit(p) - _logit(p.mean()), minlength=n_items) / np.maximum(raters, 1)
        acc, q, it = dawid_skene(item, data.user, data.label, data.n_users, cfg, item_prior_logit=ref)
        informative = np.ones(data.n_examples, bool)
        evidence["reference_p"] = p
        if share < 0.5:
            notes.append("mostly single raters: user accuracies rest on agreement with the reference rater")
    else:
        informative = multi
        acc, q, it = np.full(data.n_users, cfg.prior_accuracy), np.full(n_items, np.nan), 0
        if informative.any():
            shared, sub = np.unique(item[informative], return_inverse=True)
            acc, q_shared, it = dawid_skene(sub, data.user[informative], data.label[informative], data.n_users, cfg)
            q[shared] = q_shared
        if share < 0.5:
            notes.append(
                "mostly single raters and reference_as_rater is off: users without shared items get "
                f"no_evidence_trust={cfg.no_evidence_trust}"
            )
    has_evidence = np.bincount(data.user[informative], minlength=data.n_users) > 0
    trust = np.where(has_evidence, np.clip(2 * acc - 1, 0, 1), cfg.no_evidence_trust)
    notes.append(f"Dawid-Skene: {it} EM iterations")
    return TrustResult(
        trust=trust,
        weight=trust[data.user],
        user_evidence={"accuracy": np.where(has_evidence, acc, np.nan)},
        example_evidence={**evidence, "item_raters": raters[item], "item_posterior": q[item]},
        notes=notes,
    )


CONTRACT = SchemeContract(name=NAME, description=DESCRIPTION, settings=Config, compute=compute, label_weights=False)
