"""One reader per source format, registered by name.

A reader is ``parse(chunk) -> Parsed`` plus ``looks_like(first_object) -> bool`` used by ``--format auto``.
Adding a format is one module and one line in ``READERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..sources import Chunk
from . import bb3x, rowwise
from .common import Parsed, Reject


@dataclass(frozen=True)
class Reader:
    parse: Callable[[Chunk], Parsed]
    looks_like: Callable[[dict], bool]


# Order matters for auto-detection: the first reader whose looks_like() accepts a record wins.
READERS: dict[str, Reader] = {
    "bb3x": Reader(bb3x.parse, bb3x.looks_like),
    "messages": Reader(rowwise.parse_messages, rowwise.messages_looks_like),
    "preference": Reader(rowwise.parse_preference, rowwise.preference_looks_like),
    "kto": Reader(rowwise.parse_kto, rowwise.kto_looks_like),
}


def detect(obj: dict) -> str | None:
    """The format a record looks like, or None."""
    return next((name for name, reader in READERS.items() if reader.looks_like(obj)), None)


__all__ = ["READERS", "Reader", "Parsed", "Reject", "detect"]
