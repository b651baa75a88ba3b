"""What the server accepts from a user: text length, characters, and how often (per-user token buckets).

Text is stored as the user typed it (it is data to learn from), less the characters that are never
text: C0/C1 control characters other than newline and tab, and lone surrogates, which no JSON writer
can encode. Markup is *not* stripped: the page shows every text through ``textContent``, so ``<script>``
in a message is shown as those characters, never run.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

_NOT_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


class InputRejected(ValueError):
    """A request the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_message_chars: int = 2000  # one chat message
    max_reason_chars: int = 500  # a free-text dislike reason
    max_turns: int = 100  # messages in one conversation; then the page starts a new one
    messages_per_minute: float = 20  # per user: each one costs a generation
    feedback_per_minute: float = 120  # per user: thumbs, reasons, A/B choices
    max_body_bytes: int = 16_384  # any request body


def clean_text(value: object, *, limit: int, what: str) -> str:
    """``value`` as stored text: a non-empty string of at most ``limit`` characters, control characters removed."""
    if not isinstance(value, str):
        raise InputRejected(f"{what} must be a string")
    text = _NOT_TEXT.sub("", value).strip()
    if not text:
        raise InputRejected(f"{what} is empty")
    if len(text) > limit:
        raise InputRejected(f"{what} is {len(text)} characters long; the limit is {limit}", status=413)
    return text


class RateLimiter:
    """One token bucket per key: ``per_minute`` tokens a minute, bursts up to ``burst``.

    Buckets idle long enough to be full again are forgotten, so memory follows the active users only.
    """

    def __init__(self, per_minute: float, burst: float | None = None, clock=time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = burst if burst is not None else max(1.0, per_minute / 4)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0.0 when ``key`` may go on (a token is spent), else the seconds until it may."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            if len(self._buckets) > 10_000:
                self._forget_full(now)
        return wait

    def _forget_full(self, now: float) -> None:
        full_after = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}


__all__ = ["InputRejected", "Limits", "RateLimiter", "clean_text"]
