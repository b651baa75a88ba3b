"""Conversations as the server holds them, and every change written through ``ChatLog`` as it happens.

A conversation is kept as the BB3x record it is logged as (``user_pseudo_id``, ``chat_id``,
``message_history`` of BB3x messages), so what is in memory and what is on disk cannot drift apart.
Each bot message also carries ``served_by`` (the adapter that wrote it), an extra key that ``ingest``
ignores and the run folder repeats.

Feedback follows the BB3x fields: ``isLiked`` / ``isDisliked`` on the bot message (the last click
counts), ``dislike_type`` from the UI's reasons, and a typed explanation as a human message with
``isDislikeFeedback``. An A/B choice becomes a TRL preference row (context, chosen, rejected, user),
and the chosen reply continues the conversation as its bot message.

Methods are synchronous and thread-safe (one lock per conversation): the server calls them from
worker threads because each write waits for ``fsync``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from ..data.reasons import KNOWN_REASONS
from .limits import InputRejected, Limits, clean_text
from .log import ID_PATTERN, ChatLog
from .safety import safety_field

# The reasons the BB3x page offered with a thumbs-down (the canned-reply codes are not the user's to pick).
UI_REASONS = tuple(r for r in KNOWN_REASONS if not r.endswith("_sensitive"))
MAX_CHATS_IN_MEMORY = 20_000  # older conversations are on disk; the page is told to start a new one


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Candidate:
    """One reply the server generated, not yet in the conversation (an A/B side)."""

    message_id: str
    text: str
    served_by: dict


@dataclass
class Chat:
    chat_id: str
    user_id: str
    history: list[dict] = field(default_factory=list)
    pending: dict[str, list[Candidate]] = field(default_factory=dict)  # A/B id -> its two candidates
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self) -> dict:
        return {"user_pseudo_id": self.user_id, "chat_id": self.chat_id, "message_history": self.history}

    def context(self) -> list[dict]:
        """The turns a reply is generated from: every message but the typed dislike explanations."""
        return [{"role": "assistant" if m["sender"] == "bot" else "user", "content": m["text"]}
                for m in self.history if not m.get("isDislikeFeedback")]

    def bot_message(self, message_id: str) -> dict:
        for m in self.history:
            if m["sender"] == "bot" and m["bot_message_id"] == message_id:
                return m
        raise InputRejected("no such reply in this conversation", status=404)


class ChatStore:
    def __init__(self, log: ChatLog, limits: Limits | None = None):
        self.log, self.limits = log, limits or Limits()
        self._chats: OrderedDict[str, Chat] = OrderedDict()
        self._lock = threading.Lock()
        self.feedback_events = 0  # thumbs, reasons, explanations and A/B choices acknowledged since start
        self._events_lock = threading.Lock()

    # ---- conversations -----------------------------------------------------------------------

    def new_chat(self, user_id: str) -> Chat:
        chat = Chat(new_id(), user_id)
        with self._lock:
            self._chats[chat.chat_id] = chat
            while len(self._chats) > MAX_CHATS_IN_MEMORY:
                self._chats.popitem(last=False)
        return chat

    def get(self, chat_id: object, user_id: str) -> Chat:
        if not isinstance(chat_id, str) or not ID_PATTERN.fullmatch(chat_id):
            raise InputRejected("chat_id is not a conversation id", status=400)
        with self._lock:
            chat = self._chats.get(chat_id)
        # someone else's conversation answers as a missing one: ids are not to be probed
        if chat is None or chat.user_id != user_id:
            raise InputRejected("no such conversation (it may have expired): start a new one", status=404)
        return chat

    def context(self, chat: Chat) -> list[dict]:
        """The chat's turns for generation, read under its lock (a feedback thread may be appending)."""
        with chat.lock:
            return chat.context()

    def _save(self, chat: Chat) -> None:
        self.log.save_conversation(chat.record())

    def _count_event(self) -> None:
        with self._events_lock:
            self.feedback_events += 1

    # ---- turns -------------------------------------------------------------------------------

    def add_human(self, chat: Chat, text: object) -> dict:
        text = clean_text(text, limit=self.limits.max_message_chars, what="message")
        with chat.lock:
            if len(chat.history) + 2 > self.limits.max_turns:
                raise InputRejected(f"this conversation has reached {self.limits.max_turns} messages: start a new one",
                                    status=409)
            if chat.pending:
                raise InputRejected("choose one of the two replies first", status=409)
            message = {"text": text, "sender": "human", "human_message_id": new_id(), "safety": safety_field(text),
                       "isDislikeFeedback": False}
            chat.history.append(message)
            self._save(chat)
        return message

    def add_bot(self, chat: Chat, candidate: Candidate) -> dict:
        message = {"text": candidate.text, "sender": "bot", "bot_message_id": candidate.message_id,
                   "isLiked": False, "isDisliked": False, "served_by": candidate.served_by}
        with chat.lock:
            chat.history.append(message)
            self._save(chat)
        self._served(chat, candidate, shown="reply")
        return message

    def add_ab(self, chat: Chat, candidates: list[Candidate]) -> str:
        """Hold two candidates until the user picks one; returns the A/B id."""
        ab_id = new_id()
        with chat.lock:
            chat.pending[ab_id] = candidates
        for side, candidate in zip("ab", candidates):
            self._served(chat, candidate, shown=f"ab:{ab_id}:{side}")
        return ab_id

    def _served(self, chat: Chat, candidate: Candidate, shown: str) -> None:
        self.log.add_served({"time": time.time(), "chat_id": chat.chat_id, "message_id": candidate.message_id,
                             "shown": shown, **candidate.served_by})

    # ---- feedback ----------------------------------------------------------------------------

    def thumbs(self, chat: Chat, message_id: object, value: object) -> dict:
        """``value``: "up", "down" or "none" (a click that takes the thumb back)."""
        if value not in ("up", "down", "none"):
            raise InputRejected('thumbs must be "up", "down" or "none"')
        with chat.lock:
            message = chat.bot_message(str(message_id))
            message["isLiked"], message["isDisliked"] = value == "up", value == "down"
            if value != "down":
                message.pop("dislike_type", None)
            self._save(chat)
        self._count_event()
        return message

    def reason(self, chat: Chat, message_id: object, reason: object) -> dict:
        if reason not in UI_REASONS:
            raise InputRejected(f"reason must be one of {', '.join(UI_REASONS)}")
        with chat.lock:
            message = chat.bot_message(str(message_id))
            # a reason is a thumbs-down with a why (the BB3x page asked for it after the thumb)
            message["isLiked"], message["isDisliked"], message["dislike_type"] = False, True, reason
            self._save(chat)
        self._count_event()
        return message

    def explain(self, chat: Chat, message_id: object, text: object) -> dict:
        """A typed explanation of a dislike: a human message with ``isDislikeFeedback``, as BB3x logged it."""
        text = clean_text(text, limit=self.limits.max_reason_chars, what="explanation")
        with chat.lock:
            chat.bot_message(str(message_id))  # it must explain a reply of this conversation
            if len(chat.history) + 1 > self.limits.max_turns:
                raise InputRejected(f"this conversation has reached {self.limits.max_turns} messages", status=409)
            message = {"text": text, "sender": "human", "human_message_id": new_id(), "safety": safety_field(text),
                       "isDislikeFeedback": True, "feedback_for": str(message_id)}
            chat.history.append(message)
            self._save(chat)
        self._count_event()
        return message

    def choose(self, chat: Chat, ab_id: object, side: object) -> dict:
        """Record the A/B choice (a preference row) and continue the conversation with the chosen reply."""
        if side not in ("a", "b"):
            raise InputRejected('choice must be "a" or "b"')
        with chat.lock:
            candidates = chat.pending.pop(str(ab_id), None)
            if candidates is None:
                raise InputRejected("no such A/B pair waiting for a choice", status=404)
            chosen, rejected = (candidates[0], candidates[1]) if side == "a" else (candidates[1], candidates[0])
            self.log.add_preference({
                "id": ab_id, "user_id": chat.user_id, "chat_id": chat.chat_id, "prompt": chat.context(),
                "chosen": chosen.text, "rejected": rejected.text,
                "chosen_by": chosen.served_by, "rejected_by": rejected.served_by, "time": time.time(),
            })
            message = {"text": chosen.text, "sender": "bot", "bot_message_id": chosen.message_id,
                       "isLiked": False, "isDisliked": False, "served_by": chosen.served_by}
            chat.history.append(message)
            self._save(chat)
        self._count_event()
        return message


__all__ = ["Candidate", "Chat", "ChatStore", "UI_REASONS", "new_id"]
