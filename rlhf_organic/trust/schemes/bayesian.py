"""``bayesian``: soft trust from a Beta-binomial model of each user's agreement with the reference.

Each user's labels are trials; a success is agreement with the held-out reference (``soft``: f
itself, ``hard``: f >= 0.5). A Beta(alpha, beta) prior with the population's pooled agreement rate
as its mean (and ``prior_strength`` = alpha + beta pseudo-labels, estimated from the data when
unset) shrinks users with little feedback toward the population. Trust is the posterior mean
agreement (``output: mean``) or the posterior probability that the user agrees more often than
not (``output: reliable``). A user without feedback gets the prior's value. Weights are soft: no
label is removed, each weighs its user's trust.
"""

from typing import Literal

from pydantic import Field

from ...contracts import SchemeContract
from ..scheme import SchemeConfig, TrustResult, agreement, beta_posterior_mean, beta_prior, beta_prob_above

NAME = "bayesian"
DESCRIPTION = "posterior agreement of a Beta-binomial model per user, shrunk toward the population"


class Config(SchemeConfig):
    agreement: Literal["soft", "hard"] = Field("soft", description="a success is f (soft) or f >= 0.5 (hard)")
    prior_strength: float | None = Field(
        None, gt=0, description="pseudo-labels of the population prior (alpha + beta); unset: estimated"
    )
    output: Literal["mean", "reliable"] = Field(
        "mean", description="trust = posterior mean agreement, or P(agreement rate > 0.5)"
    )


def posterior_trust(successes, trials, cfg: Config):
    """(trust, alpha, beta) for per-user success and trial counts."""
    alpha, beta = beta_prior(successes, trials, cfg.prior_strength)
    if cfg.output == "mean":
        return beta_posterior_mean(successes, trials, alpha, beta), alpha, beta
    return beta_prob_above(successes, trials, alpha, beta), alpha, beta


def compute(data, cfg: Config, ctx) -> TrustResult:
    p = ctx.held_out(data)
    f = agreement(p, data.label)
    success = f if cfg.agreement == "soft" else (f >= 0.5).astype(float)
    successes, trials = data.per_user_sum(success), data.per_user_count()
    trust, alpha, beta = posterior_trust(successes, trials, cfg)
    return TrustResult(
        trust=trust,
        weight=trust[data.user],
        user_evidence={"agreements": successes, "posterior_mean": beta_posterior_mean(successes, trials, alpha, beta)},
        example_evidence={"reference_p": p, "agreement": f},
        notes=[f"population prior Beta({alpha:.2f}, {beta:.2f}): mean agreement {alpha / (alpha + beta):.3f}"],
    )


CONTRACT = SchemeContract(name=NAME, description=DESCRIPTION, settings=Config, compute=compute, label_weights=False)
