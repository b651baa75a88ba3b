"""Dislike reasons: the few labels a log format defines, and everything else, which is user text.

A BB3x thumbs-down carries a ``dislike_type`` chosen from a short list in the UI (off-topic,
nonsensical, rude/inappropriate, looks-like-spam, other; ``agree_sensitive`` / ``disagree_sensitive``
on canned safety replies). The release never published the exact codes, so a reason counts as one of
these labels in any case and with any of ``-``, ``_``, ``/`` or spaces between its words. The
``messages`` format's ``feedback.reason`` is free text with no labels of its own. Any other reason,
short or long, is treated as something a person typed ("my son Tom Baker died last week"): reports
count it, and print it only when asked to show user text. Standard library only (reports import it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# The BB3x UI's reasons and the canned-safety-reply codes, in one spelling (the simulator writes these).
KNOWN_REASONS = ("off_topic", "nonsensical", "rude_inappropriate", "looks_like_spam", "other",
                 "agree_sensitive", "disagree_sensitive")
NONE_GIVEN = "(none given)"  # a thumbs-down without a reason: our placeholder, not user text
_SEPARATORS = re.compile(r"[\s_/-]+")


def known_reason(reason: object) -> str | None:
    """The label ``reason`` spells (``"Off-topic"`` -> ``"off_topic"``), or None for anything else."""
    if not isinstance(reason, str):
        return None
    label = _SEPARATORS.sub("_", reason.strip().lower()).strip("_")
    return label if label in KNOWN_REASONS else None


def free_text_label(how_to_show: str) -> str:
    """What free-text reasons are counted under when hidden, saying how to show them."""
    return f"(free text, hidden: {how_to_show})"


def public_reasons(counts: Mapping[str, int], how_to_show: str = "output.show_user_text") -> dict[str, int]:
    """Reason counts as anything meant to be read or shared may print them: each known label under its
    one spelling, every other reason counted together under ``free_text_label``; most frequent first.
    Counts already in this form come back unchanged."""
    hidden = free_text_label(how_to_show)
    out: dict[str, int] = {}
    for reason, count in counts.items():
        if reason == NONE_GIVEN:
            key = NONE_GIVEN
        elif isinstance(reason, str) and reason.startswith("(free text, hidden"):
            key = hidden  # counted together earlier (under another hint)
        else:
            key = known_reason(reason) or hidden
        out[key] = out.get(key, 0) + int(count)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


__all__ = ["KNOWN_REASONS", "NONE_GIVEN", "free_text_label", "known_reason", "public_reasons"]
