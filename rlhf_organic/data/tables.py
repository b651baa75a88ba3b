"""Derive the output tables from canonical conversations and preferences, column-wise with Arrow.

An *example* is an assistant message with at least one message before it (the BB3x loader's rule);
its context is the earlier messages of the conversation (the most recent ``max_context`` of them).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .schema import (
    CONTEXT,
    CONVERSATIONS,
    EXAMPLES,
    FEEDBACK,
    GOLD,
    MESSAGE,
    MESSAGES,
    PREFERENCES,
    ROLE_ASSISTANT,
    ROLE_USER,
    USER_COUNTS,
    USERS,
)

OK = "__ok__"
_REWARD_PATTERN = r"^Predicted class: (?P<cls>\S+) with probability: (?P<prob>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
DEFAULT_MAX_CONTEXT = 256


def as_array(column: pa.ChunkedArray) -> pa.Array:
    """One array for a column; zero-copy when it is one chunk (combine_chunks copies nested data)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def conversation_tables(
    conv: pa.Table, source_format: str, max_context: int = DEFAULT_MAX_CONTEXT
) -> dict[str, pa.Table]:
    """conversations, messages, examples and feedback rows, plus per-user partial counts, for one chunk.

    An example's context holds at most the ``max_context`` most recent earlier messages: contexts grow
    with the square of a conversation's length, and one hostile line must not exhaust memory.
    """
    conv = conv.combine_chunks()
    n_conv = conv.num_rows
    history = as_array(conv.column("messages"))
    flat = pc.list_flatten(history)
    parents = pc.list_parent_indices(history).to_numpy()
    lengths = pc.list_value_length(history).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)])[:-1]
    turns = (np.arange(len(flat)) - starts[parents]).astype(np.int32)
    parent_idx = pa.array(parents)
    conv_ids = conv.column("conversation_id").take(parent_idx)
    user_ids = conv.column("user_id").take(parent_idx)

    role = pc.struct_field(flat, "role")
    is_user = pc.equal(role, ROLE_USER).fill_null(False)
    # A user message is unsafe if a detector said anything but __ok__ (the BB3x loader's rule);
    # null when neither detector looked at it.
    duo, matcher = pc.struct_field(flat, "safety_duo"), pc.struct_field(flat, "safety_string_matcher")
    checked = pc.or_(pc.is_valid(duo), pc.is_valid(matcher))
    flagged = pc.or_(pc.not_equal(duo, OK).fill_null(False), pc.not_equal(matcher, OK).fill_null(False))
    is_unsafe = pc.if_else(pc.and_(is_user, checked), flagged, pa.nulls(len(flat), pa.bool_()))
    unsafe_np = is_unsafe.fill_null(False).to_numpy(zero_copy_only=False)
    unsafe_per_conv = np.bincount(parents, weights=unsafe_np, minlength=n_conv).astype(np.int32)

    reward = pc.extract_regex(pc.struct_field(flat, "reward"), _REWARD_PATTERN)
    # struct_field (unlike .field) keeps the nulls of strings that did not match
    reward_class = pc.struct_field(reward, "cls")
    reward_prob = pc.cast(pc.struct_field(reward, "prob"), pa.float64())

    columns = {f.name: pc.struct_field(flat, f.name) for f in MESSAGE}
    messages = pa.table(
        {
            "conversation_id": conv_ids,
            "user_id": user_ids,
            "turn": pa.array(turns),
            **{k: v for k, v in columns.items() if k != "gold"},
            "is_unsafe": is_unsafe,
            "reward_class": reward_class,
            "reward_prob": reward_prob,
            "gold": columns["gold"].cast(GOLD),  # map -> key/value list (see schema.GOLD)
        },
        schema=MESSAGES,
    )

    conversations = pa.table(
        {
            "conversation_id": conv.column("conversation_id"),
            "user_id": conv.column("user_id"),
            "n_messages": pa.array(lengths.astype(np.int32)),
            "n_unsafe_user_messages": pa.array(unsafe_per_conv),
            "is_adversarial": pa.array(unsafe_per_conv > 0),
            "source_format": pa.array([source_format] * n_conv, pa.string()),
            "source_file": conv.column("source_file"),
            "source_line": conv.column("source_line"),
        },
        schema=CONVERSATIONS,
    )

    is_example = pc.and_(pc.equal(role, ROLE_ASSISTANT).fill_null(False), pa.array(turns > 0))
    ex_idx = np.flatnonzero(is_example.to_numpy(zero_copy_only=False))
    ctx_lengths = np.minimum(turns[ex_idx], max_context)
    examples = _examples(
        messages, flat, ex_idx, ex_idx - ctx_lengths, ctx_lengths,
        conversations.column("is_adversarial").take(pa.array(parents[ex_idx])),
    )
    feedback = _feedback_from_examples(examples)
    partial = _user_partials(conversations, messages, examples)
    return {
        "conversations": conversations,
        "messages": messages,
        "examples": examples,
        "feedback": feedback,
        "user_partials": partial,
        "contexts_truncated": int(np.sum(turns[ex_idx] > max_context)),
    }


def _ragged_arange(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """concat(arange(s, s + n) for s, n in zip(starts, lengths)), without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])[:-1]
    return np.arange(total) - np.repeat(offsets - starts, lengths)


def _examples(messages, flat, ex_idx, ctx_starts, ctx_lengths, adversarial) -> pa.Table:
    """One row per example; the context list is gathered with one vectorised take."""
    ctx_values = pa.StructArray.from_arrays(
        [pc.struct_field(flat, "role"), pc.struct_field(flat, "text")], names=["role", "content"]
    ).take(pa.array(_ragged_arange(ctx_starts, ctx_lengths.astype(np.int64))))
    ctx_offsets = np.concatenate([[0], np.cumsum(ctx_lengths, dtype=np.int64)]).astype(np.int32)
    context = pa.ListArray.from_arrays(pa.array(ctx_offsets), ctx_values, type=CONTEXT)
    ex = messages.take(pa.array(ex_idx, pa.int64()))
    liked = ex.column("is_liked").fill_null(False)
    disliked = ex.column("is_disliked").fill_null(False)
    # Both thumbs set (which click came last is unknown) counts as no thumbs.
    thumbs = pc.if_else(
        pc.and_(liked, pc.invert(disliked)),
        pa.scalar(1, pa.int8()),
        pc.if_else(pc.and_(disliked, pc.invert(liked)), pa.scalar(-1, pa.int8()), pa.scalar(None, pa.int8())),
    )
    example_ids = pc.binary_join_element_wise(
        ex.column("conversation_id"), pc.cast(ex.column("turn"), pa.string()), ":"
    )
    return pa.table(
        {
            "example_id": example_ids,
            "conversation_id": ex.column("conversation_id"),
            "user_id": ex.column("user_id"),
            "turn": ex.column("turn"),
            "context": context,
            "response": ex.column("text"),
            "message_id": ex.column("message_id"),
            "thumbs": thumbs,
            "dislike_reason": ex.column("dislike_reason"),
            "is_safety_controlled": ex.column("is_safety_controlled"),
            "conversation_is_adversarial": adversarial,
            "reward_class": ex.column("reward_class"),
            "reward_prob": ex.column("reward_prob"),
            "gold": ex.column("gold"),
        },
        schema=EXAMPLES,
    )


def _feedback_from_examples(examples: pa.Table) -> pa.Table:
    """One thumbs event per example with thumbs, one gold event per crowdworker annotation key."""
    rated = examples.filter(pc.is_valid(examples.column("thumbs")))
    n = rated.num_rows
    thumbs = pa.table(
        {
            "kind": pa.array(["thumbs"] * n, pa.string()),
            "user_id": rated.column("user_id"),
            "conversation_id": rated.column("conversation_id"),
            "example_id": rated.column("example_id"),
            "preference_id": pa.nulls(n, pa.string()),
            "value": pc.cast(rated.column("thumbs"), pa.float64()),
            "label": pc.if_else(
                pc.equal(rated.column("thumbs"), -1), rated.column("dislike_reason"), pa.scalar(None, pa.string())
            ),
        },
        schema=FEEDBACK,
    )
    gold = examples.column("gold").combine_chunks()
    idx = pc.list_parent_indices(gold)
    m = len(idx)
    gold_events = pa.table(
        {
            "kind": pa.array(["gold"] * m, pa.string()),
            "user_id": examples.column("user_id").take(idx),
            "conversation_id": examples.column("conversation_id").take(idx),
            "example_id": examples.column("example_id").take(idx),
            "preference_id": pa.nulls(m, pa.string()),
            "value": pc.list_flatten(gold).field("value"),
            "label": pc.list_flatten(gold).field("key"),
        },
        schema=FEEDBACK,
    )
    return pa.concat_tables([thumbs, gold_events])


def preference_tables(prefs: pa.Table) -> dict[str, pa.Table]:
    """preferences and their feedback events, plus per-user partial counts, for one chunk."""
    n = prefs.num_rows
    feedback = pa.table(
        {
            "kind": pa.array(["preference"] * n, pa.string()),
            "user_id": prefs.column("user_id"),
            "conversation_id": pa.nulls(n, pa.string()),
            "example_id": pa.nulls(n, pa.string()),
            "preference_id": prefs.column("preference_id"),
            "value": pa.array(np.ones(n)),
            "label": pa.nulls(n, pa.string()),
        },
        schema=FEEDBACK,
    )
    partial = _counts(prefs.column("user_id"), {"n_preferences": np.ones(n, np.int64)})
    return {"preferences": prefs.select(PREFERENCES.names), "feedback": feedback, "user_partials": partial}


def _counts(user_ids, columns: dict[str, np.ndarray]) -> pa.Table:
    """Per-user sums of the given per-row counts (rows without a user are left out)."""
    table = pa.table({"user_id": user_ids, **{k: pa.array(v, pa.int64()) for k, v in columns.items()}})
    table = table.filter(pc.is_valid(table.column("user_id")))
    summed = table.group_by("user_id").aggregate([(k, "sum") for k in columns])
    return summed.rename_columns(["user_id" if c == "user_id" else c.removesuffix("_sum") for c in summed.column_names])


def _user_partials(conversations: pa.Table, messages: pa.Table, examples: pa.Table) -> pa.Table:
    def as_int(arr) -> np.ndarray:
        return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)

    thumbs = examples.column("thumbs").fill_null(0)
    is_user = pc.equal(messages.column("role"), ROLE_USER).fill_null(False)
    parts = [
        _counts(
            conversations.column("user_id"),
            {
                "n_conversations": np.ones(conversations.num_rows, np.int64),
                "n_adversarial_conversations": as_int(conversations.column("is_adversarial")),
            },
        ),
        _counts(
            messages.column("user_id"),
            {
                "n_user_messages": as_int(is_user),
                "n_unsafe_user_messages": as_int(messages.column("is_unsafe").fill_null(False)),
            },
        ),
        _counts(
            examples.column("user_id"),
            {
                "n_examples": np.ones(examples.num_rows, np.int64),
                "n_thumbs_up": as_int(pc.equal(thumbs, 1)),
                "n_thumbs_down": as_int(pc.equal(thumbs, -1)),
            },
        ),
    ]
    return pa.concat_tables([_with_all_counts(p) for p in parts])


def _with_all_counts(partial: pa.Table) -> pa.Table:
    """A partial-count table widened to every USER_COUNTS column (zeros where absent)."""
    n = partial.num_rows
    columns = {"user_id": partial.column("user_id")}
    for name in USER_COUNTS:
        columns[name] = partial.column(name) if name in partial.column_names else pa.array(np.zeros(n, np.int64))
    return pa.table(columns)


def combine_user_partials(partials: list[pa.Table]) -> pa.Table:
    """Sum the per-chunk partial counts into the users table."""
    if not partials:
        return USERS.empty_table()
    table = pa.concat_tables([_with_all_counts(p) for p in partials])
    summed = table.group_by("user_id").aggregate([(c, "sum") for c in USER_COUNTS])
    summed = summed.rename_columns([c.removesuffix("_sum") for c in summed.column_names])
    n_feedback = pc.add(pc.add(summed.column("n_thumbs_up"), summed.column("n_thumbs_down")), summed.column("n_preferences"))
    summed = summed.append_column("n_feedback", n_feedback)
    return summed.select(USERS.names).cast(USERS).sort_by("user_id")
