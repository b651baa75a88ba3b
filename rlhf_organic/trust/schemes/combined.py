"""``combined``: agreement evidence times behaviour evidence, then a refitted per-label check.

1. Agreement: P(the user agrees with the k-fold reference more often than not), from the same
   Beta-binomial model as ``bayesian`` (``output: reliable``), so a user with little feedback is
   neither trusted nor condemned on one label. A success is a label with f >= 0.5 (``agreement:
   hard``, the default: robust when half the users are trolls and the reference's probabilities sit
   close to 0.5) or f itself (``soft``).
2. Behaviour, which the reference cannot see: the share of the user's own messages flagged unsafe,
   shrunk toward ``flag_prior_rate`` by ``flag_prior_strength`` pseudo-messages. It costs nothing
   up to ``flag_ok`` and everything from ``flag_bad`` (linear in between). This is what catches
   gaslight trolls: their labels sit where helpers gave none, so agreement cannot expose them, but
   they steer the bot with messages the safety detectors flag.
3. trust = agreement_trust * (1 - behaviour_weight * (1 - behaviour_trust)).
4. With ``refit``, the reference is trained again on users with trust >= ``cut`` and steps 1-3 are
   repeated against it, up to ``rounds`` times (until the trusted users stop changing). A label is
   then kept when the last reference's agreement f >= ``example_threshold`` (0 keeps every label),
   and weighs its user's trust.
"""

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from ...contracts import SchemeContract
from ..scheme import SchemeConfig, TrustResult, agreement, beta_prior, beta_prob_above

NAME = "combined"
DESCRIPTION = "agreement (Beta-binomial) x own-message safety flags, then a refitted per-label check"
TUNE = ("example_threshold", (0.0, 0.3, 0.4, 0.5, 0.6))  # (setting, candidates) for select_on_gold


class Config(SchemeConfig):
    agreement: Literal["soft", "hard"] = Field("hard", description="a success is f >= 0.5 (hard) or f (soft)")
    prior_strength: float | None = Field(None, gt=0, description="agreement prior pseudo-labels; unset: estimated")
    flag_prior_rate: float = Field(0.03, ge=0, le=1, description="flagged-message rate users are shrunk toward")
    flag_prior_strength: float = Field(10.0, ge=0, description="pseudo-messages of that prior")
    flag_ok: float = Field(0.1, ge=0, le=1, description="flagged rate that costs no trust")
    flag_bad: float = Field(0.2, ge=0, le=1, description="flagged rate that costs all trust")
    behaviour_weight: float = Field(1.0, ge=0, le=1, description="how much behaviour evidence counts (0: ignore)")
    refit: bool = Field(True, description="retrain the reference on trusted users and judge again")
    rounds: int = Field(3, ge=1, le=20, description="judge / refit rounds")
    example_threshold: float = Field(0.5, ge=0, le=1, description="keep a label when the refitted agreement f >= this")

    @model_validator(mode="after")
    def _ramp_ordered(self) -> "Config":
        if self.flag_bad <= self.flag_ok:
            raise ValueError(f"flag_bad ({self.flag_bad}) must be above flag_ok ({self.flag_ok})")
        return self


def behaviour_trust(n_flagged, n_messages, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """(shrunk flagged-message rate, trust from it) per user."""
    k = cfg.flag_prior_strength
    num = np.asarray(n_flagged, np.float64) + k * cfg.flag_prior_rate
    den = np.asarray(n_messages, np.float64) + k
    rate = np.divide(num, den, out=np.full(den.shape, cfg.flag_prior_rate), where=den > 0)
    span = max(cfg.flag_bad - cfg.flag_ok, 1e-9)
    return rate, 1.0 - np.clip((rate - cfg.flag_ok) / span, 0.0, 1.0)


def compute(data, cfg: Config, ctx) -> TrustResult:
    flag_rate, behave_trust = behaviour_trust(
        data.user_counts["n_unsafe_user_messages"], data.user_counts["n_user_messages"], cfg
    )
    p = ctx.held_out(data)
    for _ in range(cfg.rounds if cfg.refit else 1):
        f = agreement(p, data.label)
        successes = data.per_user_sum(f if cfg.agreement == "soft" else (f >= 0.5).astype(np.float64))
        trials = data.per_user_count()
        alpha, beta = beta_prior(successes, trials, cfg.prior_strength)
        agree_trust = beta_prob_above(successes, trials, alpha, beta)
        trust = agree_trust * (1 - cfg.behaviour_weight * (1 - behave_trust))
        trusted = trust[data.user] >= cfg.cut
        refit = ctx.held_out(data, keep=trusted) if cfg.refit and trusted.any() else p
        if refit is p:  # same trusted users as last round: converged
            break
        p = refit
    f = agreement(p, data.label)
    weight = trust[data.user] * (f >= cfg.example_threshold)
    return TrustResult(
        trust=trust,
        weight=weight,
        user_evidence={
            "agreement_trust": agree_trust,
            "flagged_rate": flag_rate,
            "behaviour_trust": behave_trust,
        },
        example_evidence={"reference_p": ctx.held_out(data), "refit_p": p, "agreement": f},
        notes=[f"population agreement prior Beta({alpha:.2f}, {beta:.2f})"],
    )


CONTRACT = SchemeContract(name=NAME, description=DESCRIPTION, settings=Config, compute=compute, message_flags=True, tune=TUNE)
