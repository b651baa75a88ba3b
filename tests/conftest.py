"""Shared helpers: write JSONL inputs (plain or gzip) and build BB3x conversations."""

from __future__ import annotations

import builtins
import errno
import gzip
import json
import os
import stat
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest


def write_lines(path: Path, lines: list, *, gz: bool = False, newline_at_end: bool = True) -> Path:
    """Write ``lines`` (dicts become JSON, str/bytes are written as they are) one per line."""
    raw = [(json.dumps(x) if isinstance(x, (dict, list)) else x) for x in lines]
    data = b"\n".join(x.encode() if isinstance(x, str) else x for x in raw)
    if newline_at_end:
        data += b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def bb3x_conversation(chat_id: str = "c1", user: str = "u1", *, bot: str = "bot", human: str = "human", **extra) -> dict:
    """A small BB3x conversation: human, bot (liked), human (flagged unsafe), bot (disliked)."""
    return {
        "user_pseudo_id": user,
        "chat_id": chat_id,
        "message_history": [
            {"text": "hi there", "sender": human, "human_message_id": "h1",
             "safety": {"duo_safety": "__ok__", "string_matcher": "__ok__"}},
            {"text": "hello! how are you?", "sender": bot, "bot_message_id": "b1", "isLiked": True,
             "isDisliked": False, "reward": "Predicted class: __ok__ with probability: 0.93",
             "memories": ["likes tea"], "search_knowledge_doc_titles": ["a", "b"]},
            {"text": "you are dumb", "sender": human, "human_message_id": "h2",
             "safety": {"duo_safety": "__notok__", "string_matcher": "__ok__"}},
            {"text": "that is rude", "sender": bot, "bot_message_id": "b2", "isLiked": False,
             "isDisliked": True, "dislike_type": "rude_inappropriate"},
        ],
        **extra,
    }


def read(dataset: Path, table: str):
    return pq.read_table(dataset / f"{table}.parquet")


@pytest.fixture
def quiet_log():
    messages: list[str] = []
    return messages.append


ROOT_READS_ANYTHING = hasattr(os, "geteuid") and os.geteuid() == 0


@contextmanager
def unreadable(*paths: Path):
    """Make ``paths`` (files or folders) unreadable for the block: chmod 000, modes restored after.

    Root reads a chmod-000 file or lists a chmod-000 folder anyway (it bypasses permission checks), and
    these tests often run as root. Then, for the block, ``open`` and ``os.scandir`` are made to refuse
    a path without any read bit with the error the kernel gives other users (``PermissionError``,
    EACCES), so the same test checks the same behaviour as root and as a user; a user's run gets the
    kernel's own refusal. (A dangling or looping symbolic link is unreadable for root too: tests use
    those as well.)
    """
    modes = {p: stat.S_IMODE(os.lstat(p).st_mode) for p in paths}
    for p in paths:
        os.chmod(p, 0)
    try:
        if not ROOT_READS_ANYTHING:
            yield
            return
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(builtins, "open", _refusing(builtins.open))
            patch.setattr(os, "scandir", _refusing(os.scandir))
            yield
    finally:
        for p, mode in modes.items():
            os.chmod(p, mode)


def _refusing(call):
    def checked(*args, **kwargs):
        path = args[0] if args else None
        if isinstance(path, (str, bytes, os.PathLike)):
            try:
                mode = os.stat(path).st_mode
            except OSError:
                mode = None  # let the real call say what is wrong
            if mode is not None and not stat.S_IMODE(mode) & 0o444:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
        return call(*args, **kwargs)

    return checked
