"""What every trust scheme shares: its config base, its result, the context it runs in, and the
small pure functions several schemes use (agreement with the reference, Beta-binomial shrinkage).

A scheme is a module with ``Config`` (a ``SchemeConfig``), ``compute(data, cfg, ctx) -> TrustResult``
and ``CONTRACT`` (a ``contracts.SchemeContract``); registering it is one line in ``schemes/__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from pydantic import ConfigDict, Field

from ..section import Section
from .reference import CLASSIFIERS, ReferenceConfig, held_out_probabilities, held_out_text_probabilities

if TYPE_CHECKING:  # pyarrow stays out of recipe validation
    from .data import FeedbackData


class SchemeConfig(Section):
    # Settings bounded only from below (prior strengths, tolerances) must not take infinity or NaN:
    # trust would come out NaN.
    model_config = ConfigDict(allow_inf_nan=False)

    cut: float = Field(
        0.5, ge=0, le=1,
        description="users with trust below this count as distrusted (reports, and the troll precision/recall)",
    )


@dataclass
class TrustResult:
    """Per-user trust and per-example weight, both in [0, 1], plus the evidence behind them."""

    trust: np.ndarray  # (n_users,)
    weight: np.ndarray  # (n_examples,)
    user_evidence: dict[str, np.ndarray] = field(default_factory=dict)
    example_evidence: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the user should know (e.g. a fallback taken)
    # (m,) per A/B choice; None: each weighs its user's trust (1 without a user)
    preference_weight: np.ndarray | None = None


class TrustContext:
    """Gives schemes the held-out reference's P(thumbs up) per example, computing it once per set of
    training examples.

    ``predict(data, keep) -> p`` replaces the built-in k-fold reference: any held-out model (the
    project's reward model, a model trained elsewhere, fixed numbers in a test) plugs in here.
    ``predict_texts(data, keep, texts, users) -> p`` scores texts that are not labelled examples (the
    replies of A/B choices) the same way; with a plugged-in ``predict`` and no ``predict_texts`` there
    is none (``held_out_texts`` returns None).
    """

    def __init__(self, reference: ReferenceConfig | None = None, seed: int = 0, progress=None, predict=None,
                 predict_texts=None):
        self.reference, self.seed, self.progress = reference or ReferenceConfig(), seed, progress
        self.predict = predict or self._k_fold
        self.predict_texts = predict_texts or (None if predict else self._k_fold_texts)
        self._cache: dict[bytes, np.ndarray] = {}
        self._features = None  # (data, its feature matrix): every refit reuses the same features
        self._per_dataset: dict[str, tuple] = {}  # name -> (data, what was computed from it)

    def held_out(self, data: FeedbackData, keep: np.ndarray | None = None) -> np.ndarray:
        """P(thumbs up) of every example of ``data``, each from a model that did not see it.

        With ``keep``, the reference learns only from the kept examples (the "refit" after removing
        distrusted users); every example still gets a held-out prediction.
        """
        keep = np.ones(data.n_examples, bool) if keep is None else np.asarray(keep, bool)
        key = np.packbits(keep).tobytes() + keep.size.to_bytes(8, "little")
        if key not in self._cache:
            self._cache[key] = np.asarray(self.predict(data, keep), np.float64)
        return self._cache[key]

    def features(self, data: FeedbackData):
        """The reference classifier's features of ``data.text``, computed once per dataset."""
        if self._features is None or self._features[0] is not data:
            clf = CLASSIFIERS[self.reference.model].from_config(self.reference)
            self._features = (data, clf.features(data.text))
        return self._features[1]

    def per_dataset(self, name: str, data: FeedbackData, compute):
        """``compute(data)``, once per dataset and ``name``: what every round and threshold candidate
        reuses (the prompts' n-grams of the trigger evidence, for one)."""
        key, cached = self._per_dataset.get(name, (None, None))
        if key is not data:
            cached = compute(data)
            self._per_dataset[name] = (data, cached)
        return cached

    def held_out_texts(self, data: FeedbackData, keep: np.ndarray, texts: list[str], users: np.ndarray) -> np.ndarray | None:
        """P(thumbs up) of ``texts`` (user index ``users`` each), from a reference trained on the kept
        examples of ``data`` that never saw the text's user; None when the context has no such model."""
        if self.predict_texts is None:
            return None
        return np.asarray(self.predict_texts(data, np.asarray(keep, bool), texts, np.asarray(users, np.int64)), np.float64)

    def _k_fold_texts(self, data: FeedbackData, keep: np.ndarray, texts: list[str], users: np.ndarray) -> np.ndarray:
        return held_out_text_probabilities(
            texts, users, self.features(data), data.label, data.user, data.n_users, self.reference,
            seed=self.seed, weights=keep.astype(np.float64),
        )

    def _k_fold(self, data: FeedbackData, keep: np.ndarray) -> np.ndarray:
        return held_out_probabilities(
            data.text, data.label, data.user, data.n_users, self.reference,
            seed=self.seed, weights=keep.astype(np.float64), progress=self.progress,
            features=self.features(data),
        )


def agreement(p: np.ndarray, label: np.ndarray) -> np.ndarray:
    """f = y p + (1 - y)(1 - p): how much the reference agrees with each label (Soft PURR's f)."""
    y = np.asarray(label, np.float64)
    return y * p + (1 - y) * (1 - p)


def beta_prior(successes: np.ndarray, trials: np.ndarray, strength: float | None) -> tuple[float, float]:
    """(alpha, beta) of the population prior: mean = pooled rate; strength = alpha + beta.

    With ``strength`` None it is estimated by the method of moments from users with at least two
    trials (the spread of their rates beyond binomial noise), clipped to [2, 200].
    """
    total = trials.sum()
    mean = float(successes.sum() / total) if total > 0 else 0.5
    mean = min(max(mean, 1e-3), 1 - 1e-3)
    if strength is None:
        many = trials >= 2
        strength = 10.0
        if many.sum() >= 3:
            rates, n = successes[many] / trials[many], trials[many]
            var = float(np.var(rates))
            noise = float(np.mean(mean * (1 - mean) / n))  # expected variance from sampling alone
            spread = var - noise
            if spread > 1e-9:
                strength = mean * (1 - mean) / spread - 1
        strength = float(np.clip(strength, 2.0, 200.0))
    # A tiny given strength must not underflow a parameter to 0 (a Beta(0, b) prior is undefined).
    tiny = np.finfo(np.float64).tiny
    return max(mean * strength, tiny), max((1 - mean) * strength, tiny)


def beta_posterior_mean(successes, trials, alpha: float, beta: float) -> np.ndarray:
    """(alpha + s) / (alpha + beta + n): a user's rate shrunk toward the prior mean."""
    return (alpha + np.asarray(successes, np.float64)) / (alpha + beta + np.asarray(trials, np.float64))


def beta_prob_above(successes, trials, alpha: float, beta: float, level: float = 0.5) -> np.ndarray:
    """P(rate > level) under the Beta posterior: near 1 for clearly reliable users, near 0 for clearly bad."""
    from scipy.special import betainc

    a = alpha + np.asarray(successes, np.float64)
    b = beta + np.asarray(trials, np.float64) - np.asarray(successes, np.float64)
    return 1.0 - betainc(a, b, level)


def hard(keep: np.ndarray) -> np.ndarray:
    return np.asarray(keep, bool).astype(np.float64)
