"""One input file of ``ingest``, read, parsed and derived into a sink, and the summary at the end: what
both engines run (``ingest`` in this process, ``ray_engine`` in one Ray task per file), so that a line's
fate and its accounting never depend on the engine."""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import InputError, UserError
from . import tables
from .dataset_files import table_path
from .readers import READERS, Parsed, Reject
from .schema import OUTPUT_TABLES
from .sources import ReadFailure, display_name, iter_chunks

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


class Sink:
    """Derives the output tables from parsed chunks and appends them to one Parquet file per table:
    ``<name>.parquet`` in ``folder``, or with ``part`` (a file name, ``dataset_files.part_name``) the part
    file ``<name>.parquet/<part>`` of a partitioned table, whose folder must exist.

    The work runs on one background thread (Arrow compute and Parquet encoding release the GIL), so
    it overlaps with reading and parsing the next chunk. At most ``max_pending`` parsed chunks wait,
    which keeps memory bounded by a few chunks.
    """

    def __init__(self, folder: Path, max_context: int, max_pending: int = 2, part: str | None = None):
        self.writers = {}  # opened now, so that a file without rows still leaves its tables (or parts), columns and all
        for name, schema in OUTPUT_TABLES.items():
            if name != "users":
                path = table_path(folder, name)
                self.writers[name] = pq.ParquetWriter(path / part if part else path, schema, compression="zstd")
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


def reason_kind(reason: str) -> str:
    """A reject reason without its specifics, for counting: 'field message_history[].sender'."""
    return re.sub(r"\[\d+\]", "[]", reason.split(":")[0])


def _names(items: list[dict], shown: int = 5) -> str:
    listed = ", ".join(f"{item['path']} ({item['reason']})" for item in items[:shown])
    return listed + (f" and {len(items) - shown} more (summary.json)" if len(items) > shown else "")


def outcome_message(summary: dict, out: Path) -> str:
    """The end of the last log line: what was rejected, could not be read or was skipped, each named."""
    parts = []
    if summary["rejected"]:
        parts.append(f"rejected {summary['rejected']} (see {out / 'rejects.jsonl'})")
    if summary["unreadable"]:
        parts.append(f"{len(summary['unreadable'])} could not be read: {_names(summary['unreadable'])}")
    if summary["skipped"]:
        parts.append(f"{len(summary['skipped'])} skipped: {_names(summary['skipped'])}")
    return "; ".join(parts) or "nothing rejected"


def nothing_message(unreadable: list[tuple[str, str]], skipped: list[tuple[str, str]]) -> str:
    items = [{"path": p, "reason": why} for p, why in unreadable + skipped]
    if unreadable:
        return f"nothing could be read: {_names(items, shown=20)}"
    return f"nothing to ingest: {_names(items, shown=20)}"


@dataclass
class FileOutcome:
    """What reading one input file left to account for, beyond the counts: whether it could be opened,
    and the unreadable / skipped entries of the summary that name it."""

    unopened: bool = False
    not_read: bool = False  # could not be opened, or holds no line: not an input of the dataset
    unreadable: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def ingest_file(
    path: Path, fmt: str | None, chunk_bytes: int, sink: Sink, rejects_file, counts: Counter, reasons: Counter,
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
        reasons[reason_kind(item.reason)] += 1

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
        raise UserError(nothing_message([(u["path"], u["reason"]) for u in unreadable], []))
    pq.write_table(users, table_path(tmp, "users"), compression="zstd")
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
