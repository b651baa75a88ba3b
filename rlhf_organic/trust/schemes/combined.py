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
3. Conditional agreement (``triggers``), which overall agreement misses: n-grams of the prompts
   under which labels disagree with the reference far more than their users do elsewhere are
   flagged (a backdoor trigger), and each user's agreement on the labels under them is measured on
   its own (``trust/triggers.py``; n-grams of one user's own are pooled into one more, so that
   triggers each poisoner makes up can be seen too: ``trigger_private``). A poisoner who is honest
   except after its trigger loses its trust there; a helper who
   types the phrase and rates honestly keeps it. A label under a flagged n-gram that disagrees with
   the reference gets weight 0, and so does an A/B choice under one that the reference disagrees with
   (it scores the rejected reply above the chosen one; trained on the labels kept, never on the
   chooser's fold) or whose user's conditional trust is below ``cut``.
4. trust = agreement_trust * (1 - behaviour_weight * (1 - behaviour_trust)) * conditional_trust.
5. With ``refit``, the reference is trained again on users with trust >= ``cut`` and steps 1-4 are
   repeated against it, up to ``rounds`` times (until the trusted users stop changing). A label is
   then kept when the last reference's agreement f >= ``example_threshold`` (0 keeps every label),
   and weighs its user's trust.
"""

from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field, model_validator

from ...contracts import SchemeContract
from ..scheme import SchemeConfig, TrustResult, agreement, beta_prior, beta_prob_above
from ..triggers import (
    conditional_trust,
    flagged_ngrams,
    ngram_names,
    private_ngrams,
    prompt_features,
    under_flagged,
    user_rates,
    with_private,
)

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
    triggers: bool = Field(
        True, description="measure agreement separately under prompt n-grams where labels disagree far above "
        "the population rate (backdoor triggers)",
    )
    trigger_alpha: float = Field(
        0.01, gt=0, le=1, description="chance that any honest n-gram is flagged (Bonferroni over the n-grams tested)"
    )
    trigger_min_conversations: int = Field(3, ge=1, description="test only n-grams seen in this many conversations")
    trigger_min_ratio: float = Field(
        2.0, ge=1, description="flag only n-grams whose labels disagree this many times as often as their users do"
    )
    trigger_private: bool = Field(
        True, description="also test, as one pooled n-gram, the words each user alone types (triggers of a poisoner's own)"
    )
    trigger_private_min_conversations: int = Field(
        2, ge=1, description="a word of one user's own counts when that user typed it in this many rated conversations"
    )
    trigger_prior_strength: float = Field(
        1.0, gt=0, description="pseudo-labels behind a user's agreement under flagged n-grams"
    )

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


def _conversations(data) -> np.ndarray:
    return np.unique(data.conversation_ids, return_inverse=True)[1]


def _private_key(cfg: Config) -> str:
    """What the PRIVATE column depends on, for the per-dataset cache's names."""
    return f"{cfg.trigger_private}_{cfg.trigger_private_min_conversations}"


def _private(data, cfg: Config, ctx) -> tuple[np.ndarray, np.ndarray]:
    """(columns, owners) of the n-grams of one user's own (none without ``trigger_private``), counted over
    the prompts of its thumbs and of its A/B choices (each choice its own conversation): a poisoner may
    plant its trigger mostly in choices."""
    if not cfg.trigger_private:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)

    def own_words(d):
        x, user, conversation = _label_ngrams(d, ctx), d.user, _conversations(d)
        if len(d.preference_prompt):
            x = sp.vstack([x, _preference_ngrams(d, ctx)], format="csc")
            user = np.concatenate([user, d.preference_user])
            conversation = np.concatenate([conversation, conversation.max(initial=-1) + 1 + np.arange(len(d.preference_prompt))])
        return private_ngrams(x, user, conversation, cfg.trigger_private_min_conversations)

    return ctx.per_dataset(f"private_ngrams_{_private_key(cfg)}", data, own_words)


def _label_ngrams(data, ctx):
    return ctx.per_dataset("prompt_ngrams", data, lambda d: prompt_features(d.prompt))


def _preference_ngrams(data, ctx):
    return ctx.per_dataset("preference_prompt_ngrams", data, lambda d: prompt_features(d.preference_prompt))


def _prompt_features(data, cfg: Config, ctx):
    """The labels' prompt n-grams plus the PRIVATE column (all 0 without ``trigger_private``)."""
    columns, owner = _private(data, cfg, ctx)
    return ctx.per_dataset(f"label_ngrams_{_private_key(cfg)}", data,
                           lambda d: with_private(_label_ngrams(d, ctx), d.user, columns, owner))


def trigger_evidence(data, agrees: np.ndarray, cfg: Config, ctx) -> tuple[np.ndarray, np.ndarray, dict]:
    """(conditional trust per user, whether each label sits under a flagged n-gram, what was flagged)."""
    if not cfg.triggers or data.n_examples == 0:
        return np.ones(data.n_users), np.zeros(data.n_examples, bool), {}
    x = _prompt_features(data, cfg, ctx)
    conversation = _conversations(data)
    disagree = 1.0 - agrees
    expected = user_rates(disagree, data.user, data.n_users)
    flagged, stats = flagged_ngrams(x, disagree, expected, conversation, alpha=cfg.trigger_alpha,
                                    min_conversations=cfg.trigger_min_conversations, min_ratio=cfg.trigger_min_ratio)
    under = under_flagged(x, flagged)
    trust, _, _ = conditional_trust(agrees, under, data.user, data.n_users, cfg.trigger_prior_strength)
    return trust, under, {"flagged": flagged, **stats}


def choice_weights(data, trust: np.ndarray, cond_trust: np.ndarray, flagged: np.ndarray, keep: np.ndarray,
                   cfg: Config, ctx) -> tuple[np.ndarray, dict]:
    """(weight per A/B choice, counts for the notes): its user's trust, or 0 when it sits under a flagged
    n-gram and either the reference prefers the reply it rejected or its user's agreement there is not
    trusted. The reference learns from the labels ``keep`` marks (the planted ones already dropped).
    Choices without a user weigh 1, as in the trust folder."""
    user = np.asarray(data.preference_user)
    known = user >= 0
    weight = np.where(known, trust[np.maximum(user, 0)], 1.0)
    if not len(flagged):
        return weight, {}
    columns, owner = _private(data, cfg, ctx)
    x = ctx.per_dataset(f"preference_ngrams_{_private_key(cfg)}", data, lambda d: with_private(
        _preference_ngrams(d, ctx), d.preference_user, columns, owner))
    under = under_flagged(x, flagged)
    doubtful = known & (cond_trust[np.maximum(user, 0)] < cfg.cut)
    against = np.zeros(len(user), bool)
    rows = np.flatnonzero(under)
    if len(rows) and len(data.preference_chosen):
        texts = [data.preference_chosen[i] for i in rows] + [data.preference_rejected[i] for i in rows]
        p = ctx.held_out_texts(data, keep, texts, np.concatenate([user[rows], user[rows]]))
        if p is not None:
            against[rows] = p[:len(rows)] < p[len(rows):]
    dropped = under & (doubtful | against)
    counts = {"under": int(under.sum()), "dropped": int(dropped.sum()), "against": int(against.sum())}
    return np.where(dropped, 0.0, weight), counts


def compute(data, cfg: Config, ctx) -> TrustResult:
    flag_rate, behave_trust = behaviour_trust(
        data.user_counts["n_unsafe_user_messages"], data.user_counts["n_user_messages"], cfg
    )
    p = ctx.held_out(data)
    for _ in range(cfg.rounds if cfg.refit else 1):
        f = agreement(p, data.label)
        agrees = (f >= 0.5).astype(np.float64)
        successes = data.per_user_sum(f if cfg.agreement == "soft" else agrees)
        trials = data.per_user_count()
        alpha, beta = beta_prior(successes, trials, cfg.prior_strength)
        agree_trust = beta_prob_above(successes, trials, alpha, beta)
        cond_trust, under, triggers = trigger_evidence(data, agrees, cfg, ctx)
        trust = agree_trust * (1 - cfg.behaviour_weight * (1 - behave_trust)) * cond_trust
        trusted = trust[data.user] >= cfg.cut
        refit = ctx.held_out(data, keep=trusted) if cfg.refit and trusted.any() else p
        if refit is p:  # same trusted users as last round: converged
            break
        p = refit
    f = agreement(p, data.label)
    if cfg.triggers:  # flagged n-grams against the final reference
        cond_trust, under, triggers = trigger_evidence(data, (f >= 0.5).astype(np.float64), cfg, ctx)
        trust = agree_trust * (1 - cfg.behaviour_weight * (1 - behave_trust)) * cond_trust
    # A label under a flagged n-gram that the reference disagrees with is what a trigger plants.
    weight = trust[data.user] * (f >= cfg.example_threshold) * ~(under & (f < 0.5))
    notes = [f"population agreement prior Beta({alpha:.2f}, {beta:.2f})"]
    if len(triggers.get("flagged", ())):
        names = ngram_names(data.prompt, _prompt_features(data, cfg, ctx), triggers["flagged"][:20])
        notes.append(f"{len(triggers['flagged'])} prompt n-gram(s) under which labels disagree with the reference "
                     f"far more than their users do elsewhere: "
                     + ", ".join(f"'{n}' ({a} of {k}, {e:.0%} expected)"
                                 for n, a, k, e in zip(names, triggers["against"], triggers["labels"], triggers["expected"])))
    preference_weight = None
    if cfg.triggers and len(data.preference_ids):
        preference_weight, choices = choice_weights(data, trust, cond_trust, triggers.get("flagged", np.zeros(0, np.int64)),
                                                    weight > 0, cfg, ctx)
        if choices:
            notes.append(f"{choices['under']} A/B choice(s) under those n-grams: {choices['dropped']} weigh 0 "
                         f"({choices['against']} against the reference)")
    return TrustResult(
        trust=trust,
        weight=weight,
        preference_weight=preference_weight,
        user_evidence={
            "agreement_trust": agree_trust,
            "flagged_rate": flag_rate,
            "behaviour_trust": behave_trust,
            "conditional_trust": cond_trust,
        },
        example_evidence={"reference_p": ctx.held_out(data), "refit_p": p, "agreement": f, "under_trigger": under},
        notes=notes,
    )


CONTRACT = SchemeContract(name=NAME, description=DESCRIPTION, settings=Config, compute=compute, message_flags=True, tune=TUNE)
