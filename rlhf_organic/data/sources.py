"""Finding input files and reading them as numbered chunks of lines, plain or gzip.

Reading is streaming: one chunk of about ``chunk_bytes`` is in memory at a time, whatever the
size or number of the inputs, so peak memory is bounded by the chunk.
"""

from __future__ import annotations

import glob
import gzip
import os
import stat
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import OUTPUT_MARK
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
    """The file could not be read to its end (truncated or corrupt gzip): lines from ``line`` on are lost.

    ``opened`` is False when the file could not be opened at all (permissions, a vanished file): then
    nothing of it was read."""

    file: str
    line: int
    reason: str
    opened: bool = True


@dataclass
class Found:
    """What the inputs name: the files to read, and every folder or file that was not read, with why."""

    files: list[Path] = field(default_factory=list)  # real paths, each once, in a stable order
    folders: list[Path] = field(default_factory=list)  # every folder walked (real paths)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, why): could not be listed or opened
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why): not logs, left out on purpose


def find_inputs(inputs: Sequence[str]) -> Found:
    """The files named by ``inputs`` (files, folders searched recursively, or glob patterns).

    Symbolic links to folders are followed, each real folder visited once (a link back up the tree is
    not an endless loop). Nothing is left out silently: a folder that cannot be listed and a broken or
    looping link go to ``unreadable``; a folder carrying rlhf-organic's output marker (a dataset, a run
    folder: not logs) and a FIFO, socket or device named like a log go to ``skipped``, never opened.
    A missing input, or an input folder or pattern holding nothing at all, is a ``UserError``.
    """
    found = Found()
    seen: set[str] = set()  # real paths of the folders walked
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        before = len(found.unreadable) + len(found.skipped)
        if path.is_dir():
            matches = _walk(path, found, seen)
            if not matches and len(found.unreadable) + len(found.skipped) == before:
                raise UserError(f"input folder {item} holds no .jsonl/.json/.gz files")
        elif path.is_file():
            matches = [path]
        elif glob.has_magic(item):
            matches = []
            for name in sorted(glob.glob(item, recursive=True)):
                matches += _walk(Path(name), found, seen) if os.path.isdir(name) else _entry(Path(name), found, named=True)
            if not matches and len(found.unreadable) + len(found.skipped) == before:
                raise UserError(f"input pattern {item} matches no files")
        elif os.path.lexists(path):  # a broken link, a FIFO ...: named, never opened
            matches = _entry(path, found, named=True)
        else:
            raise UserError(f"input not found: {item}")
        files.extend(matches)
    found.files = list(dict.fromkeys(Path(os.path.realpath(p)) for p in files))
    if not found.files and not found.unreadable and not found.skipped:
        raise UserError("no input files given")
    return found


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files named by ``inputs`` (``find_inputs``), in a stable order."""
    return find_inputs(inputs).files


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _walk(top: Path, found: Found, seen: set[str]) -> list[Path]:
    """The log files under the folder ``top``, sorted; what it cannot read or leaves out goes to ``found``."""
    files: list[Path] = []
    stack = [top]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:  # reached again, through a link or a loop: already walked
            continue
        seen.add(real)
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            found.unreadable.append((display_name(folder), f"cannot list this folder: {_why(exc)}"))
            continue
        found.folders.append(Path(real))
        for entry in entries:
            path = Path(entry.path)
            if not _is_dir(entry):
                files += _entry(path, found, named=False)
            elif not (path / OUTPUT_MARK).is_file():
                stack.append(path)
            elif (output := os.path.realpath(path)) not in seen:  # a dataset or run folder written here: not logs
                seen.add(output)  # named once, however many links lead to it
                found.skipped.append((display_name(path), f"an output folder of rlhf-organic (it holds "
                                      f"{OUTPUT_MARK}), not logs: not read"))
    return sorted(files)


def _is_dir(entry: os.DirEntry) -> bool:
    """Whether the entry is a folder, or a link to one (found by the property tests: ``is_dir`` raises on
    a link loop, where it returns False for a broken link)."""
    try:
        return entry.is_dir()
    except OSError:
        return False  # ``_entry`` names the link


def _entry(path: Path, found: Found, *, named: bool) -> list[Path]:
    """``[path]`` when it is a regular file to read (in a folder: one with a log suffix), else ``[]``,
    after recording a broken link, or a non-file named like a log, in ``found``. ``named``: given or
    matched by the user, so read whatever its suffix."""
    try:
        mode = os.stat(path).st_mode  # follows links
    except OSError as exc:  # a broken link, a link loop
        if os.path.islink(path):
            why = (f"broken symbolic link (to {os.readlink(path)}, which does not exist)"
                   if isinstance(exc, FileNotFoundError) else f"symbolic link that cannot be followed: {_why(exc)}")
        else:
            why = f"cannot read: {_why(exc)}"
        found.unreadable.append((display_name(path), why))
        return []
    is_log = named or path.name.lower().endswith(JSONL_SUFFIXES)
    if stat.S_ISREG(mode):
        return [path] if is_log else []
    if is_log and not stat.S_ISDIR(mode):
        found.skipped.append((display_name(path), "not a regular file (a FIFO, socket or device): never opened"))
    return []


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
    before it are still yielded. A file that cannot be opened is one ``ReadFailure`` (``opened`` False).
    """
    name = display or str(path)
    try:
        raw, stream = _open(path)
    except OSError as exc:  # permissions, a file gone since it was found: say so, and let the caller go on
        yield ReadFailure(name, 1, f"cannot open this file: {_why(exc)}", opened=False)
        return
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
