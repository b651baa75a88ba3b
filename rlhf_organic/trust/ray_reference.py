"""The k-fold reference of ``trust.reference`` on Ray (``trust.engine: ray``): the same folds, the same
bounded, seeded training sample per fold, the same classifier; the fold fits run in parallel Ray tasks and
Ray Data predicts every label with its fold's model in parallel batches. The schemes see the same
P(thumbs up) per label as with the local engine (to float rounding), so trust and weights are the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ..data.ray_engine import connect
from .reference import CLASSIFIERS, ReferenceConfig, capped_rows, text_fold_plan, user_folds


def _fit_fold(model: str, cfg, texts: list[str], labels: np.ndarray, weights: np.ndarray):
    """One fold's reference classifier, fitted in a Ray task on that fold's (bounded) training rows."""
    clf = CLASSIFIERS[model].from_config(cfg)
    return clf.fit(clf.features(texts), labels, weights)


def _predict_folds(batch: pa.Table, models: list) -> pa.Table:
    """Ray Data ``map_batches`` function: P(thumbs up) of each row from the model of its fold.

    Plain tasks, not an actor pool: an actor holds its CPU for the whole run, and with one worker CPU
    the tasks that feed it would never be scheduled."""
    texts = batch.column("text").to_pylist()
    fold = batch.column("fold").to_numpy()
    p = np.full(len(texts), 0.5)
    for k, clf in enumerate(models):
        rows = np.flatnonzero(fold == k)
        if clf is not None and len(rows):
            p[rows] = clf.predict_proba(clf.features([texts[i] for i in rows]))
    return pa.table({"row": batch.column("row"), "p": pa.array(p)})


def held_out_probabilities(
    texts: list[str], labels: np.ndarray, user: np.ndarray, n_users: int, cfg: ReferenceConfig, *, seed: int = 0,
    weights: np.ndarray | None = None, progress=None, address: str | None = None, batch_rows: int = 8192,
) -> np.ndarray:
    """``trust.reference.held_out_probabilities`` on Ray: the same folds, the same bounded training
    sample per fold (``capped_rows`` with the same seeds), the same classifier; fits in parallel tasks,
    predictions in parallel Ray Data batches. Equal to the local result to float rounding."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return np.zeros(0)
    ray = connect(address)
    weights = np.ones(len(labels)) if weights is None else np.asarray(weights, np.float64)
    fold = user_folds(n_users, cfg.folds, seed)[user]
    fit = ray.remote(num_cpus=1)(_fit_fold)
    fits: list[Any] = []
    for k in range(cfg.folds):
        if not (fold == k).any():
            fits.append(None)
            continue
        train = capped_rows((fold != k) & (weights > 0), cfg.max_train, seed + k)
        fits.append(fit.remote(cfg.model, cfg, [texts[i] for i in train], labels[train], weights[train]))
    models = []
    for ref in fits:
        models.append(None if ref is None else ray.get(ref))
        if ref is not None and progress is not None:
            progress(1)
    import ray.data

    rows = pa.table({"row": pa.array(np.arange(len(labels), dtype=np.int64)), "text": pa.array(texts, pa.string()),
                     "fold": pa.array(fold.astype(np.int64))})
    # Blocks of batch_rows rows: each is one prediction task, spread over the cluster's CPUs.
    blocks = [rows.slice(start, batch_rows) for start in range(0, len(labels), batch_rows)]
    predicted = (
        ray.data.from_arrow(blocks)
        .map_batches(_predict_folds, fn_kwargs={"models": models}, batch_format="pyarrow", batch_size=None)
        .to_arrow_refs()
    )
    p = np.full(len(labels), 0.5)
    for ref in predicted:  # placed by row number: the order batches come back in does not matter
        block = ray.get(ref)
        p[block.column("row").to_numpy()] = block.column("p").to_numpy()
    return p


def _fit_and_predict(model: str, cfg: ReferenceConfig, texts: list[str], labels: np.ndarray, weights: np.ndarray,
                     to_score: list[str]) -> np.ndarray:
    clf = _fit_fold(model, cfg, texts, labels, weights)
    return clf.predict_proba(clf.features(to_score))


def held_out_text_probabilities(
    texts: list[str], text_user: np.ndarray, labels: np.ndarray, example_texts: list[str], user: np.ndarray,
    n_users: int, cfg: ReferenceConfig, *, seed: int = 0, weights: np.ndarray | None = None, address: str | None = None,
) -> np.ndarray:
    """``trust.reference.held_out_text_probabilities`` on Ray (the replies of A/B choices): per fold asked
    about, one task fits on the same bounded, seeded sample of the examples and scores that fold's texts."""
    out = np.full(len(texts), 0.5)
    if len(texts) == 0 or len(labels) == 0:
        return out
    ray = connect(address)
    labels = np.asarray(labels)
    weights = np.ones(len(labels)) if weights is None else np.asarray(weights, np.float64)
    task = ray.remote(num_cpus=1)(_fit_and_predict)
    pending = []
    for rows, train in text_fold_plan(text_user, user, n_users, cfg, seed=seed, weights=weights):
        pending.append((rows, task.remote(cfg.model, cfg, [example_texts[i] for i in train], labels[train],
                                          weights[train], [texts[i] for i in rows])))
    for rows, ref in pending:
        out[rows] = ray.get(ref)
    return out


def predictor(cfg: ReferenceConfig, seed: int, address: str | None, progress=None):
    """``(predict, predict_texts)`` for ``TrustContext``: the k-fold reference of ``trust.reference``, and its
    scores of texts that are not labelled examples, computed on Ray."""
    def predict(data, keep: np.ndarray) -> np.ndarray:
        return held_out_probabilities(data.text, data.label, data.user, data.n_users, cfg, seed=seed,
                                      weights=np.asarray(keep, np.float64), progress=progress, address=address)

    def predict_texts(data, keep: np.ndarray, texts: list[str], users: np.ndarray) -> np.ndarray:
        return held_out_text_probabilities(texts, users, data.label, data.text, data.user, data.n_users, cfg, seed=seed,
                                           weights=np.asarray(keep, np.float64), address=address)
    return predict, predict_texts
