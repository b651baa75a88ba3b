"""The row-per-record formats: ``kto``, ``preference`` and ``messages`` JSONL (TRL / OpenAI shapes).

These are read line by line (orjson + plain Python); each record becomes a canonical conversation or
preference row. Every failed check names the line and the field.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePath

import pyarrow as pa

from ..schema import CONVERSATION, PREFERENCE, ROLE_ASSISTANT
from ..sources import Chunk
from .common import (
    BadRecord,
    Parsed,
    Reject,
    chat_messages,
    describe,
    empty_message,
    excerpt,
    json_type,
    load_object,
    message_text,
    optional_id,
    optional_user_id,
)


def _record_id(obj: dict, chunk: Chunk, line_no: int, key: str = "id") -> str:
    """The record's own id, or ``<file name>:<line>`` (stable and unique within one ingest)."""
    return optional_id(obj, key) or f"{PurePath(chunk.file).name}:{line_no}"


def _read_rows(chunk: Chunk, to_row: Callable[[dict, Chunk, int], dict], schema: pa.Schema, into: str) -> Parsed:
    parsed = Parsed()
    rows = []
    last_line = chunk.first_line + len(chunk.lines) - 1
    for line_no, line in chunk.numbered():
        if not line.strip():
            continue
        try:
            obj = load_object(line, at_eof_line=chunk.at_eof and line_no == last_line)
            row = to_row(obj, chunk, line_no)
        except BadRecord as exc:
            parsed.rejects.append(Reject(chunk.file, line_no, str(exc), excerpt(line)))
            continue
        row["source_file"], row["source_line"] = chunk.file, line_no
        rows.append(row)
    if rows:
        getattr(parsed, into).append(pa.Table.from_pylist(rows, schema=schema))
    return parsed


def _require(obj: dict, *keys: str) -> None:
    for key in keys:
        if obj.get(key) is None:
            raise BadRecord(f"missing field {key}")


def _assistant_text(value, path: str) -> str:
    """A completion given as a string or as assistant message(s) -> its text."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise BadRecord(f"field {path}: expected a string or a non-empty list of messages, got {json_type(value)}")
    return _assistant_only(chat_messages(value, path), path)


def _assistant_only(messages: list[tuple[str, str]], path: str) -> str:
    """The joined text of one or more assistant messages."""
    if not messages:
        raise BadRecord(f"field {path}: expected a string or a non-empty list of messages, got an empty array")
    if any(role != ROLE_ASSISTANT for role, _ in messages):
        raise BadRecord(f"field {path}: expected only assistant messages")
    return "\n".join(text for _, text in messages)


def _context(messages: list[tuple[str, str]]) -> list[dict]:
    return [empty_message(role, text) for role, text in messages]


# ---- kto: prompt / completion / label ---------------------------------------------------------


def kto_looks_like(obj: dict) -> bool:
    return "completion" in obj and "label" in obj


def _kto_row(obj: dict, chunk: Chunk, line_no: int) -> dict:
    _require(obj, "prompt", "completion", "label")
    label = obj["label"]
    if not isinstance(label, bool):
        raise BadRecord(f"field label: expected true/false, got {json_type(label)}")
    context = _context(chat_messages(obj["prompt"], "prompt"))
    reply = empty_message(ROLE_ASSISTANT, _assistant_text(obj["completion"], "completion"))
    reply["is_liked"], reply["is_disliked"] = label, not label
    return {
        "conversation_id": _record_id(obj, chunk, line_no),
        "user_id": optional_user_id(obj),
        "messages": context + [reply],
    }


def parse_kto(chunk: Chunk) -> Parsed:
    return _read_rows(chunk, _kto_row, CONVERSATION, "conversations")


# ---- preference: prompt / chosen / rejected ----------------------------------------------------


def preference_looks_like(obj: dict) -> bool:
    return "chosen" in obj and "rejected" in obj


def _split_implicit_prompt(chosen: list, rejected: list) -> tuple[list, list, list]:
    """TRL's implicit-prompt form: chosen and rejected are whole conversations sharing a prefix.

    Both are parsed ``(role, text)`` messages: a turn is shared when its role and text are, whatever
    else its JSON holds (comparing the raw JSON would also recurse into arbitrary nesting).
    """
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    return chosen[:n], chosen[n:], rejected[n:]


def _preference_row(obj: dict, chunk: Chunk, line_no: int) -> dict:
    _require(obj, "chosen", "rejected")
    chosen, rejected, prompt = obj["chosen"], obj["rejected"], obj.get("prompt")
    if prompt is None:
        if not (isinstance(chosen, list) and isinstance(rejected, list)):
            raise BadRecord("missing field prompt (needed unless chosen and rejected are message lists)")
        context, chosen, rejected = _split_implicit_prompt(
            chat_messages(chosen, "chosen"), chat_messages(rejected, "rejected")
        )
        chosen_text, rejected_text = _assistant_only(chosen, "chosen"), _assistant_only(rejected, "rejected")
    else:
        context = chat_messages(prompt, "prompt")
        chosen_text, rejected_text = _assistant_text(chosen, "chosen"), _assistant_text(rejected, "rejected")
    return {
        "preference_id": _record_id(obj, chunk, line_no),
        "user_id": optional_user_id(obj),
        "context": [{"role": role, "content": text} for role, text in context],
        "chosen": chosen_text,
        "rejected": rejected_text,
    }


def parse_preference(chunk: Chunk) -> Parsed:
    return _read_rows(chunk, _preference_row, PREFERENCE, "preferences")


# ---- messages: OpenAI-style chat with feedback on assistant turns ------------------------------


def messages_looks_like(obj: dict) -> bool:
    return "messages" in obj


def _feedback(msg: dict, path: str) -> tuple[bool | None, bool | None, str | None]:
    fb = msg.get("feedback")
    if fb is None:
        return None, None, None
    if not isinstance(fb, dict):
        raise BadRecord(f"field {path}.feedback: expected an object, got {json_type(fb)}")
    thumbs, reason = fb.get("thumbs"), fb.get("reason")
    if thumbs not in (None, 1, -1, 0) or isinstance(thumbs, bool):
        raise BadRecord(f"field {path}.feedback.thumbs: expected 1, -1 or 0, got {describe(thumbs)}")
    if reason is not None and not isinstance(reason, str):
        raise BadRecord(f"field {path}.feedback.reason: expected a string, got {json_type(reason)}")
    if thumbs is None or thumbs == 0:
        return None, None, reason
    return thumbs == 1, thumbs == -1, reason


def _messages_row(obj: dict, chunk: Chunk, line_no: int) -> dict:
    _require(obj, "messages")
    raw = obj["messages"]
    if not isinstance(raw, list):
        raise BadRecord(f"field messages: expected a list of messages, got {json_type(raw)}")
    if not raw:
        raise BadRecord("field messages: empty: nothing to learn from")
    messages = []
    for i, msg in enumerate(raw):
        path = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise BadRecord(f"field {path}: expected a message object, got {json_type(msg)}")
        role = msg.get("role")
        if not isinstance(role, str):
            raise BadRecord(f"field {path}.role: expected a string, got {json_type(role)}")
        out = empty_message(role, message_text(msg.get("content"), f"{path}.content"))
        liked, disliked, reason = _feedback(msg, path)
        if (liked is not None or reason is not None) and role != ROLE_ASSISTANT:
            raise BadRecord(f"field {path}.feedback: only assistant messages can carry feedback")
        out.update(
            is_liked=liked, is_disliked=disliked, dislike_reason=reason,
            message_id=optional_id(msg, "id", f"{path}.id"),
        )
        messages.append(out)
    return {
        "conversation_id": _record_id(obj, chunk, line_no, "conversation_id"),
        "user_id": optional_user_id(obj),
        "messages": messages,
    }


def parse_messages(chunk: Chunk) -> Parsed:
    return _read_rows(chunk, _messages_row, CONVERSATION, "conversations")
