"""Crash-safe writers for what the chat server collects, in formats ``rlhf-organic ingest`` reads unchanged.

Layout of a log folder (``LOG``)::

    LOG/data/chats/<chat_id>.jsonl   one BB3x conversation per file, one line (docs/formats.md, ``bb3x``)
    LOG/data/preferences.jsonl       one TRL preference row per A/B choice (``preference``)
    LOG/run/run.json                 what is being served: base, adapters, settings, and each swap
    LOG/run/served.jsonl             one row per reply: which adapter wrote it, with what sampling

``rlhf-organic ingest LOG/data --out DATASET`` reads the first two; ``run/`` is kept apart because ingest
reads every ``.json`` / ``.jsonl`` under the folders it is given.

Why two write disciplines: a conversation changes after it is written (a thumbs on an earlier reply, a
reason, the next turn), so its file is replaced as a whole through a temporary file, ``fsync`` and a
rename (``fsync`` of the folder too): a reader or a crash sees the old or the new conversation, never
half of one. A/B choices and served-reply rows never change, so they are appended, flushed and
``fsync``-ed before the request that caused them is answered: an event the user saw acknowledged is on
disk. A crash can only cut the line being written; ``AppendLog`` cuts that unacknowledged partial line
off when it reopens the file, so the next row does not glue onto it.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import orjson

from ..errors import UserError
from ..safepath import confined

CHATS, PREFERENCES, RUN, SERVED = "data/chats", "data/preferences.jsonl", "run/run.json", "run/served.jsonl"
# Ids the server makes itself (uuid4 hex). A chat id becomes a file name: anything else is refused
# before it gets near a path, and confined() checks the joined path again.
ID_PATTERN = re.compile(r"[0-9a-f]{32}")


class LogError(UserError):
    """The log folder cannot be written as asked."""


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably: temporary file, fsync, rename, fsync folder."""
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class AppendLog:
    """A JSON Lines file that rows are appended to, each one on disk (fsync) before ``append`` returns."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.dropped_tail = self._cut_partial_tail()
        self._file = open(path, "ab")
        self._lock = threading.Lock()
        self.rows = 0

    def _cut_partial_tail(self) -> int:
        """Bytes of an unfinished last line (a crash mid-append) removed; 0 when the file ends cleanly."""
        if not self.path.exists():
            return 0
        with open(self.path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return 0
            data = self.path.read_bytes()
            keep = data.rfind(b"\n") + 1
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
            return size - keep

    def append(self, row: dict) -> None:
        line = orjson.dumps(row) + b"\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
            self.rows += 1

    def close(self) -> None:
        with self._lock:
            self._file.close()


class ChatLog:
    """The writers of one log folder, called from the server's worker threads. The appends are thread-safe;
    the writes of one conversation are ordered by the caller (``ChatStore`` holds the conversation's lock),
    and two at once could not tear a file anyway: each goes through its own temporary file and a rename."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise LogError(f"log folder {self.folder} is a file, not a folder")
        self.chats = self.folder / CHATS
        self.chats.mkdir(parents=True, exist_ok=True)
        (self.folder / "run").mkdir(parents=True, exist_ok=True)
        self.preferences = AppendLog(self.folder / PREFERENCES)
        self.served = AppendLog(self.folder / SERVED)

    def chat_path(self, chat_id: str) -> Path:
        if not ID_PATTERN.fullmatch(chat_id):
            raise LogError(f"chat id {chat_id!r} is not one this server issued")
        return confined(self.chats, f"{chat_id}.jsonl", what="chat id")

    def save_conversation(self, conversation: dict) -> None:
        """Write (or replace) one BB3x conversation: ``{"user_pseudo_id", "chat_id", "message_history", ...}``."""
        path = self.chat_path(conversation["chat_id"])
        write_durable(path, orjson.dumps(conversation) + b"\n")

    def add_preference(self, row: dict) -> None:
        """Append one A/B choice: ``{"id", "user_id", "prompt": [messages], "chosen", "rejected", ...}``."""
        self.preferences.append(row)

    def add_served(self, row: dict) -> None:
        self.served.append(row)

    def write_run(self, meta: dict) -> None:
        write_durable(self.folder / RUN, orjson.dumps(meta, option=orjson.OPT_INDENT_2) + b"\n")

    def close(self) -> None:
        self.preferences.close()
        self.served.close()


__all__ = ["AppendLog", "ChatLog", "ID_PATTERN", "LogError", "write_durable"]
