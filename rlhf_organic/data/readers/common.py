"""What every reader shares: the reject record, JSON line parsing and field checks with readable reasons."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

EXCERPT_CHARS = 200


@dataclass(frozen=True)
class Reject:
    """One input line that could not be used, and why."""

    file: str
    line: int
    reason: str
    excerpt: str = ""

    def as_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "reason": self.reason, "excerpt": self.excerpt}

    def message(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class Parsed:
    """A reader's result for one chunk: canonical tables (see ``schema.py``) plus the rejects."""

    conversations: list[pa.Table] = field(default_factory=list)
    preferences: list[pa.Table] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


class BadRecord(ValueError):
    """Raised by the field checks; ``str()`` is the readable reason."""


def excerpt(raw: bytes) -> str:
    return raw[:EXCERPT_CHARS].decode("utf-8", errors="replace")


def json_type(value: Any) -> str:
    """The JSON name of a Python value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def describe(value: Any, limit: int = 40) -> str:
    """A short mention of a JSON value for a reason: scalars as written (long strings cut), containers
    by type. Never the whole value: it may be huge or nested too deeply to print."""
    if value is None or isinstance(value, bool):
        return json_type(value) if value is None else str(value).lower()
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= limit else f"{text[:limit]}..."
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value)} characters)"
    return json_type(value)


def load_object(raw: bytes, at_eof_line: bool = False) -> dict:
    """Parse one JSONL line into a dict, or raise BadRecord saying why not."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        hint = " (the file's last line looks truncated)" if at_eof_line else ""
        raise BadRecord(f"not valid JSON{hint}: {exc}") from None
    if not isinstance(value, dict):
        raise BadRecord(f"expected a JSON object per line, got {json_type(value)}")
    return value


def check_type(value: Any, typ: pa.DataType, path: str) -> None:
    """Raise BadRecord if ``value`` (parsed JSON) cannot be stored as Arrow type ``typ``; null always can.

    Only the fields the schema names are checked: unknown keys are allowed and ignored.
    """
    if value is None:
        return
    if pa.types.is_string(typ):
        ok = isinstance(value, str)
    elif pa.types.is_boolean(typ):
        ok = isinstance(value, bool)
    elif pa.types.is_integer(typ):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif pa.types.is_floating(typ):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif pa.types.is_map(typ):
        if not isinstance(value, dict):
            raise BadRecord(f"field {path}: expected an object, got {json_type(value)}")
        for key, item in value.items():
            check_type(item, typ.item_type, f"{path}.{key}")
        return
    elif pa.types.is_struct(typ):
        if not isinstance(value, dict):
            raise BadRecord(f"field {path}: expected an object, got {json_type(value)}")
        for child in typ:
            check_type(value.get(child.name), child.type, f"{path}.{child.name}")
        return
    elif pa.types.is_list(typ):
        if not isinstance(value, list):
            raise BadRecord(f"field {path}: expected an array, got {json_type(value)}")
        for i, item in enumerate(value):
            check_type(item, typ.value_type, f"{path}[{i}]")
        return
    else:  # pragma: no cover - schemas only use the types above
        raise TypeError(f"unsupported schema type {typ}")
    if not ok:
        raise BadRecord(f"field {path}: expected {_type_name(typ)}, got {json_type(value)}")


def _type_name(typ: pa.DataType) -> str:
    if pa.types.is_string(typ):
        return "a string"
    if pa.types.is_boolean(typ):
        return "true/false"
    if pa.types.is_integer(typ):
        return "an integer"
    return "a number"


def optional_id(obj: dict, key: str, path: str | None = None) -> str | None:
    """An id field that may be a string or an integer (stored as a string); None when absent.

    ``path`` names the field in messages when it is not at the top level (``messages[2].id``).
    """
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BadRecord(f"field {path or key}: expected a string or integer id, got {json_type(value)}")


def optional_user_id(obj: dict, key: str = "user_id") -> str | None:
    """A user id as ``optional_id`` reads it, with a blank one (empty or whitespace only) taken as no id,
    as null is: kept, a "" user would gather every blank-id record into one made-up user."""
    value = optional_id(obj, key)
    return None if value is not None and not value.strip() else value


def chat_messages(value: Any, path: str) -> list[tuple[str, str]]:
    """A prompt or completion given as a string or a list of chat messages -> [(role, text)].

    A plain string is one user message. Message content may be a string or a list of text parts
    (``{"type": "text", "text": ...}``), which are joined.
    """
    if isinstance(value, str):
        return [("user", value)]
    if not isinstance(value, list):
        raise BadRecord(f"field {path}: expected a string or a list of messages, got {json_type(value)}")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise BadRecord(f"field {path}[{i}]: expected a message object, got {json_type(msg)}")
        role = msg.get("role")
        if not isinstance(role, str):
            raise BadRecord(f"field {path}[{i}].role: expected a string, got {json_type(role)}")
        out.append((role, message_text(msg.get("content"), f"{path}[{i}].content")))
    return out


def message_text(content: Any, path: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(p["text"] for p in content)
    raise BadRecord(f"field {path}: expected a string (or a list of text parts), got {json_type(content)}")


def empty_message(role: str, text: str) -> dict:
    """A canonical message (schema.MESSAGE) with no feedback or annotations."""
    return {"role": role, "text": text}
