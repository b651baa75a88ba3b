"""The k-fold "reference model" of the agreement-based schemes, and the text classifier behind it.

Users are split into ``folds`` groups; for each group a classifier is trained on everyone else's
feedback and predicts P(thumbs up) for that group's examples. A user's own labels therefore never
influence the prediction their labels are compared with (the helpers/trolls study split by
example; splitting by user is stricter and costs nothing).

The classifier is pluggable through ``CLASSIFIERS``: any object with ``fit(texts, labels, weights)``
and ``predict_proba(texts) -> P(good)``. The built-in ``ngram`` one is hashed word n-grams plus a
logistic regression (scikit-learn): no vocabulary to hold, seconds for hundreds of thousands of
texts on a CPU. The project's own reward model plugs in here once it exists.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import ConfigDict, Field

from ..section import Section


class ReferenceConfig(Section):
    """``trust.reference``: the held-out model whose agreement with each label is the evidence."""

    model_config = ConfigDict(allow_inf_nan=False)  # C or tol at infinity: NaN or a late sklearn error

    model: Literal["ngram"] = Field("ngram", description="text classifier behind the reference")
    folds: int = Field(5, ge=2, le=50, description="k of the k-fold split (by user)")
    ngram_max: int = Field(2, ge=1, le=4, description="word n-grams up to this length")
    n_features: int = Field(1 << 18, ge=1 << 10, le=1 << 24, description="hashed feature dimensions")
    C: float = Field(
        4.0, ge=1e-6, le=1e6,
        description="inverse L2 regularisation of the logistic regression (liblinear never returns far outside "
        "this range)",
    )
    max_iter: int = Field(100, ge=10, description="solver iterations (liblinear)")
    tol: float = Field(1e-3, gt=0, description="solver stopping tolerance (liblinear)")
    max_train: int | None = Field(
        100_000, ge=1000,
        description="train each fold's classifier on at most this many random examples (none: all); "
        "liblinear's time grows faster than linearly, and accuracy barely moves past ~100k",
    )
    balanced: bool = Field(
        True, description="weight thumbs up and down equally, so trolls who shift the base rate cannot move the cut"
    )


class NgramClassifier:
    """Hashed word n-grams (TF, L2-normalised) and a weighted logistic regression."""

    def __init__(
        self, ngram_max: int = 2, n_features: int = 1 << 18, C: float = 4.0, max_iter: int = 100,
        balanced: bool = False, tol: float = 1e-3,
    ):
        from sklearn.feature_extraction.text import HashingVectorizer

        self.vectorizer = HashingVectorizer(
            ngram_range=(1, ngram_max), n_features=n_features, alternate_sign=False, norm="l2"
        )
        self.C, self.max_iter, self.balanced, self.tol = C, max_iter, balanced, tol
        self.model = None
        self.constant: float | None = None

    @classmethod
    def from_config(cls, cfg: ReferenceConfig) -> NgramClassifier:
        return cls(cfg.ngram_max, cfg.n_features, cfg.C, cfg.max_iter, cfg.balanced, cfg.tol)

    def features(self, texts):
        return self.vectorizer.transform(texts)

    def fit(self, texts_or_x, labels, weights=None) -> NgramClassifier:
        from sklearn.linear_model import LogisticRegression

        x = self.features(texts_or_x) if isinstance(texts_or_x, list) else texts_or_x
        labels = np.asarray(labels)
        weights = np.ones(len(labels)) if weights is None else np.asarray(weights, np.float64)
        used = weights > 0
        classes = np.unique(labels[used])
        if len(classes) < 2:  # one class (or nothing) to learn from: predict its rate
            total = weights.sum()
            self.constant = float((weights * labels).sum() / total) if total > 0 else 0.5
            self.model = None
            return self
        self.constant = None
        if self.balanced:  # each class gets half of the total weight (both sums are > 0 here)
            up, down = weights[labels == 1].sum(), weights[labels == 0].sum()
            weights = weights * np.where(labels == 1, (up + down) / (2 * up), (up + down) / (2 * down))
        self.model = LogisticRegression(C=self.C, max_iter=self.max_iter, tol=self.tol, solver="liblinear")
        self.model.fit(x[used], labels[used], sample_weight=weights[used])
        return self

    def predict_proba(self, texts_or_x) -> np.ndarray:
        x = self.features(texts_or_x) if isinstance(texts_or_x, list) else texts_or_x
        if self.model is None:
            return np.full(x.shape[0], self.constant)
        return self.model.predict_proba(x)[:, 1]


CLASSIFIERS = {"ngram": NgramClassifier}


def user_folds(n_users: int, folds: int, seed: int) -> np.ndarray:
    """A fold number for every user, balanced and shuffled by ``seed``."""
    order = np.random.default_rng(seed).permutation(n_users)
    fold = np.empty(n_users, np.int64)
    fold[order] = np.arange(n_users) % folds
    return fold


def capped_rows(mask: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """Indices of the rows where ``mask`` holds, a random ``cap`` of them (sorted) when there are more."""
    rows = np.flatnonzero(mask)
    if cap is None or len(rows) <= cap:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, cap, replace=False))


def held_out_probabilities(
    texts: list[str], labels: np.ndarray, user: np.ndarray, n_users: int, cfg: ReferenceConfig,
    *, seed: int = 0, weights: np.ndarray | None = None, progress=None, features=None,
) -> np.ndarray:
    """P(thumbs up) for every example, each from a classifier that never saw its user's fold.

    ``features``: the classifier's features of ``texts``, when the caller already has them.
    """
    labels = np.asarray(labels)
    if len(labels) == 0:
        return np.zeros(0)
    weights = np.ones(len(labels)) if weights is None else np.asarray(weights, np.float64)
    clf = CLASSIFIERS[cfg.model].from_config(cfg)
    x = clf.features(texts) if features is None else features
    fold = user_folds(n_users, cfg.folds, seed)[user]
    p = np.full(len(labels), 0.5)
    for k in range(cfg.folds):
        test = fold == k
        if not test.any():
            continue
        train = capped_rows(~test & (weights > 0), cfg.max_train, seed + k)
        p[test] = clf.fit(x[train], labels[train], weights[train]).predict_proba(x[test])
        if progress is not None:
            progress(1)
    return p


def text_fold_plan(text_user: np.ndarray, user: np.ndarray, n_users: int, cfg: ReferenceConfig, *, seed: int,
                   weights: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows of the texts, rows of the examples to train on) per fold asked about, for scoring texts that
    are not labelled examples: a text is scored by a classifier that never saw its user's fold (the folds
    of ``held_out_probabilities``), trained on that fold's bounded, seeded sample of the examples with
    weight > 0; texts without a user (-1) by one trained on every such example. Both engines use it."""
    fold = user_folds(n_users, cfg.folds, seed)
    text_user = np.asarray(text_user, np.int64)
    example_fold, text_fold = fold[user], np.where(text_user >= 0, fold[np.maximum(text_user, 0)], -1)
    return [(np.flatnonzero(text_fold == k), capped_rows((example_fold != k) & (weights > 0), cfg.max_train, seed + int(k)))
            for k in np.unique(text_fold)]


def held_out_text_probabilities(
    texts: list[str], text_user: np.ndarray, x, labels: np.ndarray, user: np.ndarray, n_users: int,
    cfg: ReferenceConfig, *, seed: int = 0, weights: np.ndarray | None = None,
) -> np.ndarray:
    """P(thumbs up) of texts that are not labelled examples (the replies of A/B choices), each from a
    classifier that never saw the fold of the text's user (``text_fold_plan``), on the examples' features
    ``x``. Only the folds asked about are fitted."""
    out = np.full(len(texts), 0.5)
    if len(texts) == 0 or len(labels) == 0:
        return out
    labels = np.asarray(labels)
    weights = np.ones(len(labels)) if weights is None else np.asarray(weights, np.float64)
    clf = CLASSIFIERS[cfg.model].from_config(cfg)
    for rows, train in text_fold_plan(text_user, user, n_users, cfg, seed=seed, weights=weights):
        out[rows] = clf.fit(x[train], labels[train], weights[train]).predict_proba([texts[i] for i in rows])
    return out
