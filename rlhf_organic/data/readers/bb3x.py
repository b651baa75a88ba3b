"""The BlenderBot 3x release format: one conversation per line (Xu et al. 2023, ParlAI projects/bb3x).

Fast path: a whole chunk goes through ``pyarrow.json`` with an explicit schema of the fields we use
(the bot's memory / search internals are skipped without being parsed). A chunk the fast path
cannot take (a broken line, a field of an unexpected type) is split in halves until the bad lines
are isolated; those small pieces go through the per-line path, which names the line and field.
Both paths produce the same BB3x-shaped Arrow table, and ``to_canonical`` validates and converts
it column-wise, so the output does not depend on which path a line took.

Crowdworker ``mturk`` annotations (objects with unpublished keys, on about 0.4% of messages) cannot
be in an explicit schema: the few lines that mention them are parsed again with orjson for that
field alone.

pyarrow's parser takes a little more than orjson: ``NaN`` / ``Infinity`` literals and nesting past
1024 levels, in the fields it skips (anywhere else they are a type error). So the per-line path gives
a line orjson cannot parse to pyarrow alone before rejecting it: a line's verdict never depends on
which path its neighbours sent it down.
"""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from ..schema import CONVERSATION, MESSAGE, ROLE_ASSISTANT, ROLE_USER
from ..sources import Chunk
from ..tables import as_array
from .common import BadRecord, Parsed, Reject, check_type, describe, excerpt, load_object

SAFETY = pa.struct([("duo_safety", pa.string()), ("string_matcher", pa.string())])
_FAST_MESSAGE_FIELDS = [
    ("text", pa.string()),
    ("sender", pa.string()),
    ("bot_message_id", pa.string()),
    ("human_message_id", pa.string()),
    ("isLiked", pa.bool_()),
    ("isDisliked", pa.bool_()),
    ("dislike_type", pa.string()),
    ("isSafetyControlledResponse", pa.bool_()),
    ("previous_interaction_failure", pa.string()),
    ("from_model_crash", pa.bool_()),
    ("isDislikeFeedback", pa.bool_()),
    ("safety", SAFETY),
    ("reward", pa.string()),
]
FAST_MESSAGE = pa.struct(_FAST_MESSAGE_FIELDS)
FULL_MESSAGE = pa.struct(_FAST_MESSAGE_FIELDS + [("mturk", pa.map_(pa.string(), pa.float64()))])


def _schema(message: pa.DataType) -> pa.Schema:
    return pa.schema(
        [("user_pseudo_id", pa.string()), ("chat_id", pa.string()), ("message_history", pa.list_(message))]
    )


FAST_SCHEMA, FULL_SCHEMA = _schema(FAST_MESSAGE), _schema(FULL_MESSAGE)
_FAST_OPTIONS = pj.ParseOptions(explicit_schema=FAST_SCHEMA, unexpected_field_behavior="ignore")
_SENDER_ROLE = {"bot": ROLE_ASSISTANT, "chatbot": ROLE_ASSISTANT, "human": ROLE_USER}
_SLOW_BELOW = 256  # lines: below this, a failing piece goes line by line instead of being split


def looks_like(obj: dict) -> bool:
    return "message_history" in obj


def parse(chunk: Chunk) -> Parsed:
    parsed = Parsed()
    lines = [(line_no, line) for line_no, line in chunk.numbered() if line.strip()]
    slow: list[tuple[int, bytes]] = []
    tables = _parse_fast_or_split(lines, slow)
    if slow:
        table = _parse_slow(slow, chunk, parsed.rejects)
        if table is not None:
            tables.append(table)
    converted = []
    for table in tables:
        conversations, rejects = to_canonical(table, chunk.file)
        converted.append(conversations)
        parsed.rejects.extend(
            Reject(r.file, r.line, r.reason, excerpt(chunk.lines[r.line - chunk.first_line])) for r in rejects
        )
    if len(converted) > 1:  # pieces took different paths: put the lines back in input order
        converted = [pa.concat_tables(converted).sort_by("source_line")]
    parsed.conversations.extend(converted)
    parsed.rejects.sort(key=lambda r: r.line)
    return parsed


def _parse_fast_or_split(lines, slow_out) -> list[pa.Table]:
    """Tables for the lines pyarrow can take in bulk; the rest are appended to ``slow_out``."""
    if not lines:
        return []
    table = _try_fast(lines)
    if table is not None:
        return [table]
    if len(lines) < _SLOW_BELOW:
        slow_out.extend(lines)
        return []
    half = len(lines) // 2
    return _parse_fast_or_split(lines[:half], slow_out) + _parse_fast_or_split(lines[half:], slow_out)


def _try_fast(lines: list[tuple[int, bytes]]) -> pa.Table | None:
    """The lines as a FULL_SCHEMA table via pyarrow.json, or None if any line needs the per-line path."""
    if not all(line.lstrip()[:1] == b"{" for _, line in lines):
        # Not an object: the per-line path says so. pyarrow.json takes a `null` line as a row of
        # nulls, and crashes the process (segfault, pyarrow 26) when one starts the data.
        return None
    data = b"\n".join(line for _, line in lines)
    longest = max(len(line) for _, line in lines)
    try:
        data.decode("utf-8")  # pyarrow.json does not check: invalid text would reach the Parquet files
    except UnicodeDecodeError:
        return None
    try:
        table = pj.read_json(
            pa.BufferReader(data),
            read_options=pj.ReadOptions(block_size=max(1 << 20, longest + 2)),  # small blocks: more threads
            parse_options=_FAST_OPTIONS,
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(lines):  # e.g. two objects on one line: let the per-line path say so
        return None
    try:
        table = _with_mturk(table, [(row, line) for row, (_, line) in enumerate(lines) if b'"mturk"' in line])
    except BadRecord:
        return None
    return table.append_column("source_line", pa.array([n for n, _ in lines], pa.int64()))


def _gold_numbers(gold: dict) -> dict:
    """Crowdworker annotations as doubles: Arrow will not convert an integer above 2**53 by itself."""
    return {key: float(value) if type(value) is int else value for key, value in gold.items()}


def _with_mturk(table: pa.Table, mturk_lines: list[tuple[int, bytes]]) -> pa.Table:
    """Add the ``mturk`` message field, which has open keys and so cannot be in pyarrow's schema.

    Only the few lines that mention it (about 0.4% of messages carry one) are parsed again, with orjson.
    """
    history = as_array(table.column("message_history"))
    lengths = pc.list_value_length(history).fill_null(0).to_numpy()
    starts = np.concatenate([[0], np.cumsum(lengths)])
    gold_type = FULL_MESSAGE.field("mturk").type
    where = np.full(int(starts[-1]), -1)  # message -> index into values, -1 for none
    values: list[dict] = []
    for row, line in mturk_lines:
        try:
            messages = orjson.loads(line).get("message_history")
        except orjson.JSONDecodeError:  # NaN / deep nesting that pyarrow took: the labels cannot be read
            raise BadRecord("not valid JSON") from None  # the per-line path says where
        if not isinstance(messages, list) or len(messages) != lengths[row]:
            raise BadRecord("message_history does not match")
        for i, msg in enumerate(messages):
            value = msg.get("mturk") if isinstance(msg, dict) else None
            if value is not None:
                check_type(value, gold_type, f"message_history[{i}].mturk")
                where[starts[row] + i] = len(values)
                values.append(_gold_numbers(value))
    # Building the column from a list of mostly None is slow for map types: gather instead.
    gold = pa.array(values, gold_type).take(pa.array(where, mask=where < 0))
    flat = pc.list_flatten(history)
    messages = pa.StructArray.from_arrays(
        [flat.field(i) for i in range(flat.type.num_fields)] + [gold],
        fields=list(FULL_MESSAGE),
        mask=flat.is_null(),
    )
    offsets = pa.array(starts.astype(np.int32))
    rebuilt = pa.ListArray.from_arrays(offsets, messages, mask=history.is_null())
    return table.set_column(table.schema.get_field_index("message_history"), "message_history", rebuilt)


def _parse_slow(lines, chunk: Chunk, rejects: list[Reject]) -> pa.Table | None:
    rows, alone = [], []
    last_line = chunk.first_line + len(chunk.lines) - 1
    for line_no, line in lines:
        try:
            try:
                obj = load_object(line, at_eof_line=chunk.at_eof and line_no == last_line)
            except BadRecord:
                # NaN, Infinity or deep nesting in a field we skip: the bulk path takes it, so take it.
                table = _try_fast([(line_no, line)]) if _beyond_orjson(line) else None
                if table is None:
                    raise
                alone.append(table)
                continue
            if type(obj.get("user_pseudo_id")) is int:  # docs/formats.md: user ids may be integers
                obj["user_pseudo_id"] = str(obj["user_pseudo_id"])
            history = obj.get("message_history")
            if isinstance(history, list):
                for i, msg in enumerate(history):
                    if isinstance(msg, dict) and isinstance(msg.get("reward"), dict):
                        msg["reward"] = _reward_from_dict(msg["reward"], f"message_history[{i}].reward")
                    if isinstance(msg, dict) and isinstance(msg.get("mturk"), dict):
                        msg["mturk"] = _gold_numbers(msg["mturk"])
            for f in FULL_SCHEMA:
                check_type(obj.get(f.name), f.type, f.name)
        except BadRecord as exc:
            rejects.append(Reject(chunk.file, line_no, str(exc), excerpt(line)))
            continue
        obj["source_line"] = line_no
        rows.append(obj)
    schema = FULL_SCHEMA.append(pa.field("source_line", pa.int64()))
    tables = ([pa.Table.from_pylist(rows, schema=schema)] if rows else []) + [t.cast(schema) for t in alone]
    if not tables:
        return None
    return pa.concat_tables(tables).sort_by("source_line") if alone else tables[0]


def _beyond_orjson(line: bytes) -> bool:
    """Whether a line orjson rejects may be one pyarrow takes: a NaN / Infinity literal, or nesting
    past orjson's 1024 levels (a cheap test; pyarrow, which costs more, decides)."""
    return b"NaN" in line or b"Inf" in line or line.count(b"[") + line.count(b"{") > 1024


def _reward_from_dict(value: dict, path: str) -> str:
    """The data card calls ``reward`` a dict although the files hold a string: keep a dict as JSON text."""
    for item in value.values():
        if isinstance(item, str) and item.startswith("Predicted class:"):
            return item
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # nested past what the encoder takes (255 levels)
        raise BadRecord(f"field {path}: an object nested too deeply to keep as text") from None


def to_canonical(table: pa.Table, source_file: str) -> tuple[pa.Table, list[Reject]]:
    """Validate a BB3x-shaped table column-wise and convert it to ``schema.CONVERSATION``.

    Rows with a missing id, a missing or empty ``message_history``, a message without text or with an
    unknown sender become rejects naming the line and field.
    """
    table = table.combine_chunks()
    history = as_array(table.column("message_history"))
    n = table.num_rows
    reasons: dict[int, str] = {}

    def flag(mask, reason: str) -> None:
        for row in np.flatnonzero(np.asarray(mask, dtype=bool)):
            reasons.setdefault(int(row), reason)

    for name in ("user_pseudo_id", "chat_id"):
        flag(table.column(name).is_null().to_numpy(zero_copy_only=False), f"missing field {name}")
    # a blank user id is no id, as null is (kept, a "" user would gather every such conversation)
    blank = pc.equal(pc.utf8_trim_whitespace(table.column("user_pseudo_id")), "").fill_null(False)
    flag(blank.to_numpy(zero_copy_only=False), "missing field user_pseudo_id (blank)")
    lengths = pc.list_value_length(history).fill_null(-1).to_numpy()
    flag(lengths < 0, "missing field message_history")
    flag(lengths == 0, "message_history is empty: nothing to learn from")

    flat = pc.list_flatten(history)
    parents = pc.list_parent_indices(history).to_numpy()
    starts = np.concatenate([[0], np.cumsum(np.maximum(lengths, 0))])[:-1]
    turns = np.arange(len(flat)) - starts[parents] if len(flat) else np.zeros(0, np.int64)
    sender = _f(flat, "sender")
    role = _map_values(pc.utf8_lower(sender), _SENDER_ROLE)
    text_null = _f(flat, "text").is_null().to_numpy(zero_copy_only=False)
    bad_sender = role.is_null().to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(text_null | bad_sender):
        row, turn = int(parents[i]), int(turns[i])
        if text_null[i]:
            reason = f"field message_history[{turn}].text: missing"
        else:
            got = sender[i].as_py()
            reason = (
                f"field message_history[{turn}].sender: expected bot/human (or Chatbot/Human), got {describe(got)}"
                if got is not None
                else f"field message_history[{turn}].sender: missing"
            )
        reasons.setdefault(row, reason)

    lines = table.column("source_line").to_numpy()
    rejects = [Reject(source_file, int(lines[r]), reasons[r]) for r in sorted(reasons)]
    keep_rows = np.ones(n, dtype=bool)
    keep_rows[list(reasons)] = False
    keep_msgs = keep_rows[parents] if len(flat) else np.zeros(0, dtype=bool)

    safety = _f(flat, "safety")
    messages = pa.StructArray.from_arrays(
        [
            role,
            _f(flat, "text"),
            pc.coalesce(_f(flat, "bot_message_id"), _f(flat, "human_message_id")),
            _f(flat, "isLiked"),
            _f(flat, "isDisliked"),
            _f(flat, "dislike_type"),
            _f(flat, "isSafetyControlledResponse"),
            _f(flat, "previous_interaction_failure"),
            _f(flat, "from_model_crash"),
            _f(flat, "isDislikeFeedback"),
            _f(safety, "duo_safety"),
            _f(safety, "string_matcher"),
            _f(flat, "reward"),
            _f(flat, "mturk"),
        ],
        fields=list(MESSAGE),
    ).filter(pa.array(keep_msgs))
    kept_lengths = np.maximum(lengths, 0)[keep_rows]
    offsets = np.concatenate([[0], np.cumsum(kept_lengths)]).astype(np.int32)
    mask = pa.array(keep_rows)
    out = pa.table(
        [
            table.column("chat_id").filter(mask),
            table.column("user_pseudo_id").filter(mask),
            pa.ListArray.from_arrays(pa.array(offsets), messages),
            pa.array([source_file] * int(keep_rows.sum()), pa.string()),
            table.column("source_line").filter(mask),
        ],
        schema=CONVERSATION,
    )
    return out, rejects


def _f(struct_array: pa.Array, name: str) -> pa.Array:
    """A struct child that is null wherever the struct itself is null (``.field()`` ignores that)."""
    return pc.struct_field(struct_array, name)


def _map_values(values: pa.Array, mapping: dict[str, str]) -> pa.Array:
    """Map strings through ``mapping``; anything not in it (or null) becomes null."""
    keys = pa.array(list(mapping))
    idx = pc.index_in(values, value_set=keys)
    return pc.take(pa.array(list(mapping.values())), idx)

