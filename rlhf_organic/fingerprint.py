"""Fingerprints: a short hash of everything a stage's output depends on (its settings, the seed, the
fingerprints of the stages it reads, the files it ingests and the package version). Two runs of a stage
with the same fingerprint produce the same output, so a completed one can be reused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from . import __version__


def fingerprint(*parts) -> str:
    """A 16-hex-digit hash of JSON-serialisable ``parts`` (key order does not matter)."""
    text = json.dumps([__version__, *parts], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def files_signature(paths) -> list[list]:
    """(path, size, modification time) of every file: a cheap stand-in for hashing their content."""
    signature = []
    for path in sorted(str(p) for p in paths):
        stat = Path(path).stat()
        signature.append([path, stat.st_size, stat.st_mtime_ns])
    return signature
