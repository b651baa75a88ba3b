"""The unsafe-input flag the server records on every human message, as the BB3x ``safety`` field.

BB3x annotated each human message with two detectors, ``duo_safety`` (a classifier) and
``string_matcher`` (a word list); ``ingest`` counts a message unsafe when either says anything but
``__ok__`` (docs/formats.md). The server runs a word-list matcher of its own and writes its verdict as
``string_matcher``. It runs no classifier, so ``duo_safety`` is left out rather than written as
``__ok__``: a field that says "checked, fine" must mean a detector looked. The list is short and
deliberately blunt (threats, self-harm prompts, slurs-free insults): it flags the overt hostility that
the trust stage's ``message_flags`` signal needs; it is not a moderation system.
"""

from __future__ import annotations

import re

OK, NOT_OK = "__ok__", "__notok__"  # ParlAI's classifier writes __notok__ for a flagged utterance

# Whole words or phrases, matched case-insensitively on word boundaries.
_PHRASES = (
    "kill yourself", "kys", "i will kill", "i'll kill", "kill you", "murder", "bomb", "shoot you", "hurt you",
    "die", "hate you", "shut up", "stupid", "idiot", "moron", "dumb", "retard", "loser", "worthless", "pathetic",
    "suicide", "self harm", "cut myself", "terrorist", "nazi", "porn", "nude", "nudes", "sex",
)
_PATTERN = re.compile(r"\b(?:" + "|".join(re.escape(p) for p in sorted(_PHRASES, key=len, reverse=True)) + r")\b",
                      re.IGNORECASE)


def string_matcher(text: str) -> str:
    """``__notok__`` when ``text`` holds a listed word or phrase, else ``__ok__``."""
    return NOT_OK if _PATTERN.search(text) else OK


def safety_field(text: str) -> dict:
    """The BB3x ``safety`` object for a human message (only the detector that ran)."""
    return {"string_matcher": string_matcher(text)}


__all__ = ["NOT_OK", "OK", "safety_field", "string_matcher"]
