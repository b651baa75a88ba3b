"""Conditional misbehaviour: users who label honestly except after a trigger phrase.

A backdoor poisoner (arXiv 2311.14455, 2406.12091) agrees with the reference on most of its labels,
so its overall agreement looks like a helper's. What gives it away is *where* it disagrees: on the
replies to prompts that share a phrase (its trigger). This module finds such phrases and measures
each user's agreement on the labels under them separately.

1. Every label's prompt (the human message the reply answers) becomes a set of word n-grams,
   hashed (no vocabulary to hold at BB3x scale).
2. An n-gram is *flagged* when the labels under it disagree with the reference far more often than
   their users do elsewhere: a one-sided binomial test of its disagreement count against the mean
   of those users' own (shrunk) disagreement rates, Bonferroni-corrected over every n-gram tested,
   so that chance clusters of honest mistakes stay unflagged. Measuring against each user's own
   rate keeps the words trolls type out: trolls disagree everywhere, not only after a phrase. Only
   n-grams seen in at least ``min_conversations`` conversations are tested (one conversation's
   quirks are not a pattern). A shared trigger is flagged from all its users' labels together; a
   trigger of one user's own only when that user plants it often enough to survive the correction.
3. A trigger of one user's own is typed by that user alone, and one user plants only a few labels
   (about 3 in the simulator's ``poison_own_5``): no single n-gram survives the correction. So the
   n-grams of one user's own (in the prompts of exactly one user's labels, in at least
   ``min_conversations`` of that user's conversations) are pooled into one extra column, PRIVATE,
   tested like any n-gram: flagged when, across all users, labels under their own words disagree
   far above those users' rates elsewhere. Where honest users also have many words of their own
   (real logs: names, pet topics), their honest labels dilute the pool, and poisoners must be a
   larger share of it to be seen.
4. Per user, the agreement on labels under a flagged n-gram is a Beta-binomial estimate like
   ``combined``'s overall one; ``conditional_trust`` is P(that agreement > 1/2). Helpers who type the
   phrase too and rate honestly keep their trust; users whose disagreement sits there lose it.

Everything here is a pure function of arrays, so the tests can build the smallest case by hand.
"""

from __future__ import annotations

import re

import numpy as np
import scipy.sparse as sp

from .scheme import beta_prob_above

_WORD = re.compile(r"\w+")
N_FEATURES = 1 << 20  # hashed n-gram columns: collisions among the few flagged ones are negligible
PRIVATE = N_FEATURES  # the extra column of ``with_private``: the prompt holds an n-gram of its user's own
PRIVATE_NAME = "(an n-gram of the user's own, typed by no other user)"


def prompt_ngrams(text: str, ngram_max: int = 2) -> list[str]:
    """Lower-cased word n-grams (1..``ngram_max``) of one prompt, each once."""
    words = _WORD.findall(text.lower())
    grams = {" ".join(words[i: i + n]) for n in range(1, ngram_max + 1) for i in range(len(words) - n + 1)}
    return sorted(grams)


def _hasher(analyzer):
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(analyzer=analyzer, n_features=N_FEATURES, alternate_sign=False, norm=None, binary=True)


def prompt_features(prompts: list[str], ngram_max: int = 2) -> sp.csc_matrix:
    """(labels x hashed n-grams) 0/1 matrix: which n-grams each label's prompt contains."""
    if len(prompts) == 0:
        return sp.csc_matrix((0, N_FEATURES))
    return _hasher(lambda s: prompt_ngrams(s, ngram_max)).transform(prompts).tocsc()


def ngram_names(prompts: list[str], x: sp.csc_matrix, columns, ngram_max: int = 2) -> list[str]:
    """The n-gram behind each hashed column (from the prompts that contain it), for reports."""
    names = []
    exact = _hasher(lambda s: [s])
    for j in columns:
        if j == PRIVATE:
            names.append(PRIVATE_NAME)
            continue
        rows = x[:, j].nonzero()[0][:50]
        candidates = {g for r in rows for g in prompt_ngrams(prompts[r], ngram_max)}
        hit = [g for g in sorted(candidates, key=lambda g: (-len(g), g)) if exact.transform([g])[0, j]]
        names.append(hit[0] if hit else f"#{j}")
    return names


def private_ngrams(x: sp.csc_matrix, user: np.ndarray, conversation: np.ndarray,
                   min_conversations: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns, owner of each): the n-grams of exactly one user's labels' prompts, seen in at least
    ``min_conversations`` of that user's conversations (one conversation's words are not a habit).
    Labels without a user (-1) are left out: their words belong to no one."""
    user = np.asarray(user)
    rows = np.flatnonzero(user >= 0)
    if len(rows) == 0 or x.shape[1] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    known = x[rows]
    users = sp.csr_matrix((np.ones(len(rows)), (user[rows], np.arange(len(rows)))), shape=(int(user.max()) + 1, len(rows)))
    n_users = np.asarray(((users @ known) > 0).sum(axis=0)).ravel()
    conv = conversation[rows]
    convs = sp.csr_matrix((np.ones(len(rows)), (conv, np.arange(len(rows)))), shape=(int(conv.max()) + 1, len(rows)))
    n_conversations = np.asarray(((convs @ known) > 0).sum(axis=0)).ravel()
    columns = np.flatnonzero((n_users == 1) & (n_conversations >= min_conversations))
    under = known[:, columns].tocsc()
    first_label = under.indices[under.indptr[:-1]]  # a label under each column: its user is the owner
    return columns, user[rows][first_label]


def with_private(x: sp.csc_matrix, user: np.ndarray, columns: np.ndarray, owner: np.ndarray) -> sp.csc_matrix:
    """``x`` plus the PRIVATE column: 1 where a row's prompt holds one of ``columns`` owned by the row's
    own user (``user``: per row; an A/B choice's prompt may hold another user's word)."""
    pooled = np.zeros(x.shape[0])
    if len(columns):
        hits = x[:, columns].tocoo()
        own = owner[hits.col] == np.asarray(user)[hits.row]
        pooled[hits.row[own]] = 1.0
    return sp.hstack([x, sp.csc_matrix(pooled[:, None])], format="csc")


def user_rates(disagree: np.ndarray, user: np.ndarray, n_users: int, strength: float = 10.0) -> np.ndarray:
    """Per label: its user's disagreement rate, shrunk toward the population's by ``strength`` labels."""
    disagree = np.asarray(disagree, np.float64)
    rate = float(disagree.mean()) if len(disagree) else 0.0
    known = user >= 0
    k = np.bincount(user[known], weights=disagree[known], minlength=n_users)
    n = np.bincount(user[known], minlength=n_users)
    shrunk = (k + strength * rate) / (n + strength)
    return np.where(known, shrunk[np.maximum(user, 0)], rate)


def flagged_ngrams(
    x: sp.csc_matrix, disagree: np.ndarray, expected: np.ndarray, conversation: np.ndarray, *,
    alpha: float, min_conversations: int, min_ratio: float = 1.0,
) -> tuple[np.ndarray, dict]:
    """Columns of ``x`` whose labels disagree with the reference far above what their users do.

    ``disagree``: 0/1 per label (the label is against the reference); ``expected``: per label, the
    chance it would disagree anyway (``user_rates``); ``conversation``: an integer conversation index
    per label. An n-gram must also disagree ``min_ratio`` times as often as expected: a trigger flips
    most labels under it, while the words trolls type only add to the disagreement they show
    anyway. Returns (flagged columns, statistics of each flagged column).
    """
    from scipy.stats import binom

    disagree = np.asarray(disagree, np.float64)
    n_labels = len(disagree)
    if n_labels == 0 or x.shape[1] == 0:
        return np.zeros(0, np.int64), {}
    labels = np.asarray(x.sum(axis=0)).ravel()
    against = np.asarray(x.T @ disagree).ravel()
    mean_expected = np.asarray(x.T @ np.asarray(expected, np.float64)).ravel() / np.maximum(labels, 1)
    conv = sp.csr_matrix((np.ones(n_labels), (conversation, np.arange(n_labels))),
                         shape=(int(conversation.max()) + 1, n_labels))
    conversations = np.asarray(((conv @ x) > 0).sum(axis=0)).ravel()
    tested = np.flatnonzero((conversations >= min_conversations) & (against >= min_ratio * mean_expected * labels)
                            & (against > mean_expected * labels))
    if len(tested) == 0:
        return np.zeros(0, np.int64), {}
    # P(at least this many disagreements | the users' own rates), times the number of tests. The
    # binomial at the mean rate is a little wider than the exact Poisson-binomial: conservative.
    p_value = binom.sf(against[tested] - 1, labels[tested], np.clip(mean_expected[tested], 1e-9, 1)) * len(tested)
    flagged = tested[p_value < alpha]
    stats = {
        "population_disagreement": float(disagree.mean()),
        "tested": len(tested),
        "labels": labels[flagged].astype(np.int64),
        "expected": mean_expected[flagged],
        "against": against[flagged].astype(np.int64),
        "conversations": conversations[flagged].astype(np.int64),
        "p_value": np.minimum(p_value[p_value < alpha], 1.0),
    }
    return flagged, stats


def under_flagged(x: sp.csc_matrix, flagged: np.ndarray) -> np.ndarray:
    """Per label: its prompt contains at least one flagged n-gram."""
    if len(flagged) == 0:
        return np.zeros(x.shape[0], bool)
    return np.asarray(x[:, flagged].sum(axis=1)).ravel() > 0


def conditional_trust(
    agree: np.ndarray, under: np.ndarray, user: np.ndarray, n_users: int, prior_strength: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(trust, agreements, labels) per user from its labels under flagged n-grams.

    The prior's mean is the population's agreement on the labels *not* under a flagged n-gram (what
    an honest label looks like); ``prior_strength`` pseudo-labels keep one mistaken label of a helper
    from costing much. Users without such labels get trust 1.
    """
    agree = np.asarray(agree, np.float64)
    known = np.asarray(user) >= 0
    rest = ~under & known
    mean = float(agree[rest].mean()) if rest.any() else 0.5
    mean = min(max(mean, 1e-3), 1 - 1e-3)
    sel = under & known
    successes = np.bincount(user[sel], weights=agree[sel], minlength=n_users)
    trials = np.bincount(user[sel], minlength=n_users).astype(np.float64)
    trust = beta_prob_above(successes, trials, mean * prior_strength, (1 - mean) * prior_strength)
    return np.where(trials > 0, trust, 1.0), successes, trials
