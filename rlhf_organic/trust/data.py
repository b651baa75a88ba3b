"""What a trust scheme sees: the feedback of an ingested dataset, as flat numpy arrays.

Only feedback-bearing examples are loaded (and only the columns trust uses: of the context, only
the human message each reply answers), so a BB3x-sized dataset fits in memory easily. Users are
numbered ``0..n_users-1`` in the order of the dataset's ``users.parquet``; every per-example array
refers to them by that index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..data.dataset_files import has_table, iter_batches, read_table, table_path, table_schema
from ..errors import UserError

_EXAMPLE_COLUMNS = ["example_id", "user_id", "conversation_id", "response", "thumbs",
                    "conversation_is_adversarial", "gold"]
GOOD_GOLD_KEYS = ("good",)  # crowdworker annotation keys that mean "this reply is fine"


@dataclass(frozen=True)
class FeedbackData:
    """Feedback of one dataset. ``label`` is 1 for a thumbs-up, 0 for a thumbs-down."""

    user_ids: np.ndarray  # (n_users,) str, sorted
    user_counts: dict[str, np.ndarray]  # users.parquet counters, each (n_users,)
    example_ids: np.ndarray  # (n,) str: feedback-bearing examples
    user: np.ndarray  # (n,) int: index into user_ids; -1 for a label without a user (uniform scheme only)
    conversation_ids: np.ndarray  # (n,) str
    text: list[str]  # (n,) the bot response the feedback is about
    label: np.ndarray  # (n,) int8
    adversarial: np.ndarray  # (n,) bool: the example's conversation had a flagged user message
    preference_ids: np.ndarray  # (m,) str
    preference_user: np.ndarray  # (m,) int, -1 for preferences without a user
    gold_text: list[str]  # responses with a clean crowdworker label (any example, with or without thumbs)
    gold_label: np.ndarray  # (g,) int8: 1 good, 0 not
    gold_example_ids: np.ndarray  # (g,) str
    prompt: list[str] = field(default_factory=list)  # (n,) the human message each reply answers ("" if none)
    preference_prompt: list[str] = field(default_factory=list)  # (m,) the same for each A/B choice
    preference_chosen: list[str] = field(default_factory=list)  # (m,) the reply each A/B choice preferred
    preference_rejected: list[str] = field(default_factory=list)  # (m,) and the one it passed over

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_examples(self) -> int:
        return len(self.example_ids)

    def per_user_sum(self, values: np.ndarray) -> np.ndarray:
        known = self.user >= 0
        return np.bincount(self.user[known], weights=np.asarray(values)[known], minlength=self.n_users)

    def per_user_count(self) -> np.ndarray:
        return np.bincount(self.user[self.user >= 0], minlength=self.n_users).astype(np.int64)

    def per_user_mean(self, values: np.ndarray, default: float) -> np.ndarray:
        """Mean of ``values`` over each user's examples; ``default`` for users without any."""
        n = self.per_user_count()
        sums = self.per_user_sum(values.astype(np.float64))
        return np.where(n > 0, sums / np.maximum(n, 1), default)


def from_arrays(
    user_ids, user, text, label, *, adversarial=None, user_counts=None, example_ids=None,
    conversation_ids=None, gold_text=(), gold_label=(), prompt=None,
) -> FeedbackData:
    """A FeedbackData from plain lists (for tests, benches and callers without a dataset folder)."""
    user = np.asarray(user, np.int64)
    n, n_users = len(user), len(user_ids)
    counts = {k: np.asarray(v, np.int64) for k, v in (user_counts or {}).items()}
    for name in ("n_conversations", "n_adversarial_conversations", "n_user_messages", "n_unsafe_user_messages"):
        counts.setdefault(name, np.zeros(n_users, np.int64))
    return FeedbackData(
        user_ids=np.asarray(user_ids, dtype=object),
        user_counts=counts,
        example_ids=np.asarray(example_ids if example_ids is not None else [f"e{i}" for i in range(n)], dtype=object),
        user=user,
        conversation_ids=np.asarray(conversation_ids if conversation_ids is not None else [f"c{i}" for i in range(n)], dtype=object),
        text=list(text),
        label=np.asarray(label, np.int8),
        adversarial=np.asarray(adversarial if adversarial is not None else np.zeros(n, bool), bool),
        preference_ids=np.zeros(0, dtype=object),
        preference_user=np.zeros(0, np.int64),
        gold_text=list(gold_text),
        gold_label=np.asarray(gold_label, np.int8),
        gold_example_ids=np.asarray([f"g{i}" for i in range(len(gold_label))], dtype=object),
        prompt=list(prompt) if prompt is not None else [""] * n,
    )


def _index_of(values: pa.Array, user_ids: pa.Array) -> np.ndarray:
    idx = pc.index_in(values, value_set=user_ids)
    return idx.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def gold_labels(gold: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(row index, label) of examples with a crowdworker annotation: good if a 'good' key is > 0."""
    gold = gold.combine_chunks()
    parents = pc.list_parent_indices(gold).to_numpy()
    flat = pc.list_flatten(gold)
    is_good = pc.and_(
        pc.is_in(pc.struct_field(flat, "key"), value_set=pa.array(GOOD_GOLD_KEYS)),
        pc.greater(pc.struct_field(flat, "value"), 0),
    ).fill_null(False).to_numpy(zero_copy_only=False)
    rows = np.unique(parents)
    good = np.zeros(len(gold), bool)
    good[parents[is_good]] = True
    return rows, good[rows].astype(np.int8)


def last_user_message(context: pa.Array) -> list[str]:
    """Per context (a list of {role, content}): the content of its last ``user`` message, "" if none."""
    if len(context) == 0:
        return []
    parents = pc.list_parent_indices(context).to_numpy()
    flat = pc.list_flatten(context)
    is_user = pc.equal(pc.struct_field(flat, "role"), "user").fill_null(False).to_numpy(zero_copy_only=False)
    last = np.full(len(context), -1, np.int64)
    np.maximum.at(last, parents[is_user], np.flatnonzero(is_user))
    found = last >= 0
    out = np.full(len(context), "", dtype=object)
    out[found] = pc.struct_field(flat, "content").take(pa.array(last[found])).fill_null("").to_pylist()
    return out.tolist()


def rated_prompts(path: Path, batch_rows: int = 65_536) -> list[str]:
    """The last human message before every thumbs-bearing example (every row of a table without
    ``thumbs``: preferences), in table order. Read in batches and only for rated rows: whole contexts of
    a BB3x-sized dataset would not fit in memory."""
    out: list[str] = []
    rated_only = "thumbs" in table_schema(path).names
    columns = ["context", "thumbs"] if rated_only else ["context"]
    for batch in iter_batches(path, columns, batch_rows):
        if rated_only:
            batch = batch.filter(pc.is_valid(batch.column("thumbs")))
        out += last_user_message(batch.column("context"))
    return out


def load_feedback(dataset: str | Path, anonymous: bool = False) -> FeedbackData:
    """Read the feedback of an ingested dataset folder (``rlhf-organic ingest`` output).

    Labels without a user id (TRL data, where ``user_id`` is optional) are refused unless ``anonymous``
    (the uniform scheme, which needs no users): then their ``user`` index is -1.
    """
    dataset = Path(dataset)
    for name in ("examples", "users"):
        if not has_table(table_path(dataset, name)):
            raise UserError(f"{dataset} is not an ingested dataset: {name}.parquet is missing (run rlhf-organic ingest first)")
    users = read_table(table_path(dataset, "users"))
    user_ids = users.column("user_id").combine_chunks()
    examples = read_table(table_path(dataset, "examples"), columns=_EXAMPLE_COLUMNS)
    gold_rows, gold_label = gold_labels(examples.column("gold"))
    gold = examples.take(pa.array(gold_rows, pa.int64()))
    rated = examples.filter(pc.is_valid(examples.column("thumbs")))
    user = _index_of(rated.column("user_id"), user_ids)
    unknown = user < 0
    if anonymous:
        unknown &= rated.column("user_id").is_valid().to_numpy(zero_copy_only=False)
    if unknown.any():
        first = int(np.flatnonzero(unknown)[0])
        bad = rated.column("example_id")[first].as_py()
        if not rated.column("user_id")[first].is_valid:  # e.g. TRL rows, whose user_id is optional
            n = int(pc.sum(pc.is_null(rated.column("user_id"))).as_py())
            raise UserError(
                f"{dataset}: {n} thumbs label(s) have no user id (first: example {bad}); trust schemes judge users, "
                "so every label needs one: give the input records a user_id, or use trust.scheme: uniform "
                "(everyone weight 1)"
            )
        raise UserError(f"{dataset}: example {bad} has feedback but its user is not in users.parquet")
    prefs_path = table_path(dataset, "preferences")
    prefs = (read_table(prefs_path, columns=["preference_id", "user_id", "chosen", "rejected"])
             if has_table(prefs_path) else None)
    return FeedbackData(
        user_ids=np.asarray(user_ids.to_pylist(), dtype=object),
        user_counts={
            c: users.column(c).to_numpy().astype(np.int64) for c in users.column_names if c.startswith("n_")
        },
        example_ids=np.asarray(rated.column("example_id").to_pylist(), dtype=object),
        user=user,
        conversation_ids=np.asarray(rated.column("conversation_id").to_pylist(), dtype=object),
        text=rated.column("response").to_pylist(),
        label=(rated.column("thumbs").to_numpy() > 0).astype(np.int8),
        adversarial=rated.column("conversation_is_adversarial").fill_null(False).to_numpy(),
        preference_ids=np.asarray(prefs.column("preference_id").to_pylist() if prefs else [], dtype=object),
        preference_user=_index_of(prefs.column("user_id"), user_ids) if prefs else np.zeros(0, np.int64),
        gold_text=gold.column("response").to_pylist(),
        gold_label=gold_label,
        gold_example_ids=np.asarray(gold.column("example_id").to_pylist(), dtype=object),
        prompt=rated_prompts(table_path(dataset, "examples")),
        preference_prompt=rated_prompts(prefs_path) if prefs else [],
        preference_chosen=prefs.column("chosen").fill_null("").to_pylist() if prefs else [],
        preference_rejected=prefs.column("rejected").fill_null("").to_pylist() if prefs else [],
    )
