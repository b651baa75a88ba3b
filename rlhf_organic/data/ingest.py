"""``rlhf-organic ingest``: organic logs in, a folder of Parquet tables out, every bad line accounted for.

Output folder (readable with pandas / pyarrow / datasets, no rlhf_organic needed):
``conversations``, ``messages``, ``examples``, ``feedback``, ``preferences``, ``users`` (``.parquet``),
``rejects.jsonl`` (file, line, reason, excerpt of every line that could not be used) and
``summary.json`` (counts; and, each with its reason, the files and folders that could not be read and
those left out on purpose: empty files, output folders of rlhf-organic). The folder is assembled under a
temporary name and renamed when complete, so a crashed ingest never leaves a folder that looks finished.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from ..atomic import atomic_dir, check_free
from ..errors import InputError, UserError
from ..section import ENGINES
from . import INPUT_FORMATS, tables
from .readers import READERS, Parsed, Reject, detect
from .readers.common import BadRecord, load_object
from .schema import OUTPUT_TABLES
from .sources import ReadFailure, display_name, find_inputs, iter_chunks

DEFAULT_CHUNK_BYTES = 32 << 20
_DETECT_LINES = 100  # auto-detection looks at up to this many lines of each file
_COMPACT_PARTIALS = 64  # per-user partial count tables summed into one past this many
SUMMARY_COUNTS = (
    "conversations",
    "messages",
    "examples",
    "thumbs_up",
    "thumbs_down",
    "preferences",
    "gold_labels",
    "unsafe_user_messages",
    "adversarial_conversations",
    "users",
    "rejected",
    "read_errors",
    "contexts_truncated",
    "lines",
)


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


class _Sink:
    """Derives the output tables from parsed chunks and appends them to one Parquet file per table.

    The work runs on one background thread (Arrow compute and Parquet encoding release the GIL), so
    it overlaps with reading and parsing the next chunk. At most ``max_pending`` parsed chunks wait,
    which keeps memory bounded by a few chunks.
    """

    def __init__(self, folder: Path, max_context: int, max_pending: int = 2):
        self.writers = {
            name: pq.ParquetWriter(folder / f"{name}.parquet", schema, compression="zstd")
            for name, schema in OUTPUT_TABLES.items()
            if name != "users"
        }
        self.max_context = max_context
        self.counts: Counter[str] = Counter()
        self.partials: list[pa.Table] = []  # per-user partial counts, summed at the end
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-sink")
        self.pending: deque[Future] = deque()
        self.max_pending = max_pending

    def submit(self, parsed: Parsed, source_format: str) -> None:
        self.pending.append(self.pool.submit(self._consume, parsed, source_format))
        while len(self.pending) > self.max_pending:
            self.pending.popleft().result()  # re-raises what failed on the thread

    def close(self) -> None:
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            for writer in self.writers.values():
                writer.close()

    def users(self) -> pa.Table:
        return tables.combine_user_partials(self.partials)

    def _write(self, name: str, table: pa.Table) -> None:
        if table.num_rows:
            self.writers[name].write_table(table.cast(OUTPUT_TABLES[name]))

    def _consume(self, parsed: Parsed, source_format: str) -> None:
        counts = self.counts
        for conv in parsed.conversations:
            derived = tables.conversation_tables(conv, source_format, self.max_context)
            for name in ("conversations", "messages", "examples", "feedback"):
                self._write(name, derived[name])
            self.partials.append(derived["user_partials"])
            examples, conversations, messages = derived["examples"], derived["conversations"], derived["messages"]
            thumbs = examples.column("thumbs")
            counts["conversations"] += conversations.num_rows
            counts["messages"] += messages.num_rows
            counts["examples"] += examples.num_rows
            counts["contexts_truncated"] += derived["contexts_truncated"]
            counts["thumbs_up"] += pc.sum(pc.equal(thumbs, 1)).as_py() or 0
            counts["thumbs_down"] += pc.sum(pc.equal(thumbs, -1)).as_py() or 0
            counts["gold_labels"] += pc.sum(pc.is_valid(examples.column("gold"))).as_py() or 0
            counts["unsafe_user_messages"] += pc.sum(messages.column("is_unsafe")).as_py() or 0
            counts["adversarial_conversations"] += pc.sum(conversations.column("is_adversarial")).as_py() or 0
        for prefs in parsed.preferences:
            derived = tables.preference_tables(prefs)
            self._write("preferences", derived["preferences"])
            self._write("feedback", derived["feedback"])
            self.partials.append(derived["user_partials"])
            counts["preferences"] += prefs.num_rows
        if len(self.partials) >= _COMPACT_PARTIALS:  # memory bounded by the users, not by the chunks
            self.partials[:] = [self.users()]


def _reason_kind(reason: str) -> str:
    """A reject reason without its specifics, for counting: 'field message_history[].sender'."""
    return re.sub(r"\[\d+\]", "[]", reason.split(":")[0])


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
        raise UserError(_nothing(found.unreadable, found.skipped))
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
        f"{summary['preferences']} preferences from {summary['lines']} lines; {_outcome(summary, out)}")
    return summary


def _names(items: list[dict], shown: int = 5) -> str:
    listed = ", ".join(f"{item['path']} ({item['reason']})" for item in items[:shown])
    return listed + (f" and {len(items) - shown} more (summary.json)" if len(items) > shown else "")


def _outcome(summary: dict, out: Path) -> str:
    """The end of the last log line: what was rejected, could not be read or was skipped, each named."""
    parts = []
    if summary["rejected"]:
        parts.append(f"rejected {summary['rejected']} (see {out / 'rejects.jsonl'})")
    if summary["unreadable"]:
        parts.append(f"{len(summary['unreadable'])} could not be read: {_names(summary['unreadable'])}")
    if summary["skipped"]:
        parts.append(f"{len(summary['skipped'])} skipped: {_names(summary['skipped'])}")
    return "; ".join(parts) or "nothing rejected"


def _nothing(unreadable: list[tuple[str, str]], skipped: list[tuple[str, str]]) -> str:
    items = [{"path": p, "reason": why} for p, why in unreadable + skipped]
    if unreadable:
        return f"nothing could be read: {_names(items, shown=20)}"
    return f"nothing to ingest: {_names(items, shown=20)}"


def _ingest_into(tmp: Path, found, formats, strict, chunk_bytes, max_context, progress, scrub=None, log=print) -> dict:
    counts = Counter({key: 0 for key in SUMMARY_COUNTS})  # counted here; the sink counts what it derives
    reasons: Counter[str] = Counter()
    files = found.files
    unreadable = [{"path": p, "reason": why} for p, why in found.unreadable]
    skipped = [{"path": p, "reason": why} for p, why in found.skipped]
    not_read: set[Path] = set()  # files that could not be opened, or hold no line: not inputs of the dataset
    unopened = 0
    sink = _Sink(tmp, max_context)
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


@dataclass
class FileOutcome:
    """What reading one input file left to account for, beyond the counts: whether it could be opened,
    and the unreadable / skipped entries of the summary that name it."""

    unopened: bool = False
    not_read: bool = False  # could not be opened, or holds no line: not an input of the dataset
    unreadable: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def ingest_file(
    path: Path, fmt: str | None, chunk_bytes: int, sink: _Sink, rejects_file, counts: Counter, reasons: Counter,
    *, strict: bool, scrub=None, on_progress=None, log: Callable[[str], None] = print,
) -> FileOutcome:
    """Read, parse and derive one input file into ``sink``; its bad lines go to ``rejects_file``.

    Both engines run exactly this per file (``ray_engine`` in a task, with a sink and rejects file of
    the task's own), so a line's fate and its accounting never depend on the engine.
    """
    name = display_name(path)
    reader = READERS.get(fmt) if fmt is not None else None  # None: detection found no line (empty, or unreadable)
    lines_before, failed = counts["lines"], False
    outcome = FileOutcome()

    def reject(item: Reject) -> None:
        if strict:
            raise InputError(item.message())
        rejects_file.write(orjson.dumps(scrub.reject(item.as_dict()) if scrub else item.as_dict()) + b"\n")
        reasons[_reason_kind(item.reason)] += 1

    for chunk in iter_chunks(path, chunk_bytes, display=name, on_progress=on_progress):
        if isinstance(chunk, ReadFailure):
            failed = True
            counts["read_errors"] += 1
            if not chunk.opened:  # one unreadable file is named and the others are ingested
                outcome.unreadable.append({"path": name, "reason": chunk.reason})
                outcome.not_read = outcome.unopened = True
                log(f"{name}: {chunk.reason}")
            reject(Reject(chunk.file, chunk.line, chunk.reason))
            continue
        nonblank = sum(1 for line in chunk.lines if line.strip())
        counts["lines"] += nonblank
        if reader is None:
            if nonblank:
                raise UserError(f"{name} changed while it was being ingested (it was empty); ingest again")
            continue
        parsed = reader.parse(chunk)
        for item in parsed.rejects:
            counts["rejected"] += 1
            reject(item)
        sink.submit(scrub.parsed(parsed) if scrub else parsed, fmt)
    if not failed and counts["lines"] == lines_before:  # named, so that "nothing rejected" is not all it says
        why = "empty: no line with anything on it"  # the same whether plain, gzip or blank lines
        outcome.skipped.append({"path": name, "reason": why})
        outcome.not_read = True
        log(f"{name}: {why}; nothing to ingest from it")
    return outcome


def finish(tmp: Path, files, formats, counts: Counter, reasons: Counter, users: pa.Table,
           unreadable: list[dict], skipped: list[dict], not_read: set[Path], unopened: int) -> dict:
    """Write users.parquet, check the accounting rule and return the summary: the end both engines share."""
    if unopened == len(files):  # some unreadable files are accounted for; all of them is nothing to ingest
        raise UserError(_nothing([(u["path"], u["reason"]) for u in unreadable], []))
    pq.write_table(users, tmp / "users.parquet", compression="zstd")
    counts["users"] = users.num_rows
    records = counts["conversations"] + counts["preferences"]
    if records + counts["rejected"] != counts["lines"]:  # the accounting rule; a failure here is a bug
        raise RuntimeError(f"ingest lost track of lines: {records} records + {counts['rejected']} rejected != {counts['lines']}")
    return {
        **{key: counts[key] for key in SUMMARY_COUNTS},
        "reject_reasons": dict(reasons.most_common()),
        "inputs": [{"file": display_name(p), "format": formats[p]} for p in files if p not in not_read],
        "unreadable": unreadable,
        "skipped": skipped,
    }


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # gone or unreachable: reading it will say so
        return 0
