"""``rlhf-organic ingest``: organic logs in, a folder of Parquet tables out, every bad line accounted for.

Output folder (readable with pandas / pyarrow / datasets, no rlhf_organic needed):
``conversations``, ``messages``, ``examples``, ``feedback``, ``preferences``, ``users`` (``.parquet``; with
``engine: ray`` each but ``users`` is a folder of part files, one per input file: ``dataset_files``),
``rejects.jsonl`` (file, line, reason, excerpt of every line that could not be used) and
``summary.json`` (counts; and, each with its reason, the files and folders that could not be read and
those left out on purpose: empty files, output folders of rlhf-organic). The folder is assembled under a
temporary name and renamed when complete, so a crashed ingest never leaves a folder that looks finished.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
from tqdm.auto import tqdm

from ..atomic import atomic_dir, check_free
from ..errors import InputError, UserError
from ..section import ENGINES
from . import INPUT_FORMATS, tables
from .per_file import SUMMARY_COUNTS, Sink, finish, ingest_file, nothing_message, outcome_message
from .readers import detect
from .readers.common import BadRecord, load_object
from .sources import ReadFailure, display_name, find_inputs, iter_chunks

DEFAULT_CHUNK_BYTES = 32 << 20
_DETECT_LINES = 100  # auto-detection looks at up to this many lines of each file


def detect_file_format(path: Path) -> str | None:
    """The format of the first recognisable record among the file's first lines.

    None when there is no line to tell it from: the file is empty (or blank to its end), or cannot be
    opened or read from its start; reading it then accounts for it (``_ingest_into``)."""
    keys_seen, looked, nonblank = None, 0, False
    for chunk in iter_chunks(path, 1 << 20):
        if isinstance(chunk, ReadFailure):
            if not nonblank:
                return None
            break
        for _, line in list(chunk.numbered())[: _DETECT_LINES - looked]:
            if not line.strip():
                continue
            nonblank = True
            try:
                obj = load_object(line)
            except BadRecord:
                continue
            name = detect(obj)
            if name:
                return name
            keys_seen = keys_seen or sorted(obj)
        looked += len(chunk.lines)  # a chunk ends at a line, so one over 1 MB starts the next: read on
        if looked >= _DETECT_LINES:
            break
    else:
        if not nonblank:  # read to its end: nothing but blank lines, if anything
            return None
    what = f"its records have keys {keys_seen}" if keys_seen else "no valid JSON object in its first lines"
    raise UserError(
        f"cannot tell the format of {display_name(path)}: {what}. "
        f"Expected one of: bb3x (message_history), messages (messages), preference (chosen, rejected), "
        f"kto (completion, label); or pass --format."
    )


def ingest(
    inputs: Sequence[str],
    out: str | os.PathLike,
    *,
    fmt: str = "auto",
    strict: bool = False,
    overwrite: bool = False,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    max_context: int = tables.DEFAULT_MAX_CONTEXT,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
    privacy=None,
    engine: str = "local",
    ray_address: str | None = None,
) -> dict:
    """Ingest ``inputs`` into the dataset folder ``out``; returns the summary (also saved as summary.json).

    In ``strict`` mode the first bad line raises ``InputError`` naming file, line and reason, and
    nothing is written. Example contexts keep at most ``max_context`` earlier messages (the messages
    table keeps them all). ``progress=None`` shows a progress bar only on a terminal. ``privacy``: a
    ``privacy.PrivacySection`` (ids to hash, fields to drop), applied to every record as it is read.
    ``engine``: ``local`` (this process) or ``ray`` (one Ray task per input file, on the cluster at
    ``ray_address`` or a Ray of this machine's; ``ray_engine``): the same dataset and summary either way.
    """
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if fmt not in INPUT_FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(INPUT_FORMATS)}")
    scrub = privacy.scrubber() if privacy is not None else None  # a missing salt fails here, before any work
    if engine == "ray":  # a wrong address or a missing Ray fails here, before any file is read
        from . import ray_engine

        ray_engine.connect(ray_address)
    out = Path(out)
    found = find_inputs(inputs)
    check_free(out, overwrite, [*found.folders, *found.files, *(Path(p) for p, _ in found.unreadable)])
    for path, why in found.unreadable + found.skipped:
        log(f"{path}: {why}")
    if strict and found.unreadable:
        raise InputError(f"{found.unreadable[0][0]}: {found.unreadable[0][1]}")
    if not found.files:
        raise UserError(nothing_message(found.unreadable, found.skipped))
    formats = {}
    for path in found.files:
        formats[path] = fmt if fmt != "auto" else detect_file_format(path)
        how = "auto-detected" if fmt == "auto" else "given"
        if formats[path] is not None:
            log(f"{display_name(path)}: format {formats[path]} ({how})")

    started = time.perf_counter()
    with atomic_dir(out, kind="dataset") as tmp:
        if engine == "ray":
            summary = ray_engine.ingest_into(tmp, found, formats, strict, chunk_bytes, max_context, scrub, log, ray_address)
        else:
            summary = _ingest_into(tmp, found, formats, strict, chunk_bytes, max_context, progress, scrub, log)
        summary["seconds"] = round(time.perf_counter() - started, 3)
        if scrub is not None:  # the dataset says what was hashed and dropped (never the salt)
            summary["privacy"] = {"hash_ids": sorted(scrub.hash_ids), "drop": sorted(scrub.drop)}
        (tmp / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    log(f"ingested {summary['conversations']} conversations, {summary['examples']} examples, "
        f"{summary['preferences']} preferences from {summary['lines']} lines; {outcome_message(summary, out)}")
    return summary


def _ingest_into(tmp: Path, found, formats, strict, chunk_bytes, max_context, progress, scrub=None, log=print) -> dict:
    counts = Counter({key: 0 for key in SUMMARY_COUNTS})  # counted here; the sink counts what it derives
    reasons: Counter[str] = Counter()
    files = found.files
    unreadable = [{"path": p, "reason": why} for p, why in found.unreadable]
    skipped = [{"path": p, "reason": why} for p, why in found.skipped]
    not_read: set[Path] = set()  # files that could not be opened, or hold no line: not inputs of the dataset
    unopened = 0
    sink = Sink(tmp, max_context)
    rejects_file = open(tmp / "rejects.jsonl", "wb")
    total = sum(_size(p) for p in files)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="ingest", disable=None if progress is None else not progress)
    try:
        for path in files:
            result = ingest_file(path, formats[path], chunk_bytes, sink, rejects_file, counts, reasons,
                                 strict=strict, scrub=scrub, on_progress=bar.update, log=log)
            unopened += result.unopened
            unreadable += result.unreadable
            skipped += result.skipped
            if result.not_read:
                not_read.add(path)
    finally:
        bar.close()
        sink.close()
        rejects_file.close()
    counts.update(sink.counts)
    return finish(tmp, files, formats, counts, reasons, sink.users(), unreadable, skipped, not_read, unopened)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # gone or unreachable: reading it will say so
        return 0
