"""Finding input files and reading them as numbered chunks of lines, plain or gzip.

Reading is streaming: one chunk of about ``chunk_bytes`` is in memory at a time, whatever the
size or number of the inputs, so peak memory is bounded by the chunk.
"""

from __future__ import annotations

import glob
import gzip
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".gz")
GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass
class Chunk:
    """Consecutive lines of one file; ``first_line`` is the 1-based number of ``lines[0]``."""

    file: str
    first_line: int
    lines: list[bytes]
    at_eof: bool = False  # the last line of the file is in this chunk (it may be truncated)

    def numbered(self) -> Iterator[tuple[int, bytes]]:
        return zip(range(self.first_line, self.first_line + len(self.lines)), self.lines)


@dataclass
class ReadFailure:
    """The file could not be read to its end (truncated or corrupt gzip): lines from ``line`` on are lost."""

    file: str
    line: int
    reason: str


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files named by ``inputs`` (files, folders searched recursively, or glob patterns), in a stable order."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            matches = sorted(
                p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(JSONL_SUFFIXES)
            )
            if not matches:
                raise UserError(f"input folder {item} holds no .jsonl/.json/.gz files")
        elif path.is_file():
            matches = [path]
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not matches:
                raise UserError(f"input pattern {item} matches no files")
        else:
            raise UserError(f"input not found: {item}")
        found.extend(matches)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise UserError("no input files given")
    return unique


def _open(path: Path):
    raw = open(path, "rb")
    is_gzip = raw.read(2) == GZIP_MAGIC
    raw.seek(0)
    return raw, (gzip.GzipFile(fileobj=raw) if is_gzip else raw)


def _read_block(stream, size: int) -> tuple[bytes, Exception | None]:
    """Up to ``size`` bytes; on a read error, what was read before it and the error.

    Small ``read1`` calls keep what a truncated or corrupt gzip stream yielded before failing.
    """
    parts, got = [], 0
    try:
        while got < size:
            part = stream.read1(min(size - got, 1 << 20))
            if not part:
                break
            parts.append(part)
            got += len(part)
    except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        return b"".join(parts), exc
    return b"".join(parts), None


def iter_chunks(
    path: Path,
    chunk_bytes: int,
    *,
    display: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[Chunk | ReadFailure]:
    """Yield the file's lines in chunks of about ``chunk_bytes`` (decompressed), split at newlines.

    ``on_progress`` receives the number of raw (compressed) bytes consumed since its last call.
    A gzip stream that ends early or is corrupt ends the file with a ``ReadFailure``: the lines read
    before it are still yielded.
    """
    name = display or str(path)
    raw, stream = _open(path)
    line_no, tail, last_pos = 1, b"", 0
    try:
        while True:
            block, error = _read_block(stream, chunk_bytes)
            if line_no == 1 and not tail and block.startswith(UTF8_BOM):  # files saved by some Windows tools
                block = block[len(UTF8_BOM) :]
            if error is not None:
                data = tail + block
                if data:
                    lines = data.split(b"\n")
                    yield Chunk(name, line_no, lines, at_eof=True)
                    line_no += len(lines)
                yield ReadFailure(name, line_no, f"cannot read past this point: {error}")
                return
            if on_progress is not None:
                pos = raw.tell()
                on_progress(pos - last_pos)
                last_pos = pos
            if not block:
                if tail:
                    yield Chunk(name, line_no, [tail], at_eof=True)
                return
            data = tail + block
            cut = data.rfind(b"\n")
            if cut < 0:  # one line longer than a chunk: keep reading
                tail = data
                continue
            tail = data[cut + 1 :]
            lines = data[:cut].split(b"\n")
            yield Chunk(name, line_no, lines)
            line_no += len(lines)
    finally:
        stream.close()
        raw.close()


def display_name(path: Path) -> str:
    """A short path for messages: relative to the working directory when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if rel.startswith("..") else rel
