"""``engine: ray``: ingest and the trust reference past one machine, on Ray, with the local code inside.

Nothing here parses, derives or scores on its own: every Ray task runs the very functions the local
engine runs (``per_file.ingest_file`` per input file, ``NgramClassifier`` per fold), so a line's fate, its
reject message and every weight are the same whichever engine ran. What this module adds is the
splitting and the joining, both in a fixed order, so the output does not depend on which task finished
first:

- ingest: the dataset is partitioned. Each table but ``users`` is a folder ``<name>.parquet/`` of part
  files, and the task of input file ``i`` writes part ``i`` of every table itself
  (``dataset_files.part_name``: the names sort in input order), straight into the output's temporary
  folder: the driver never reads or rewrites a table. Read in name order the parts are the local
  engine's file, row for row (``dataset_files``; every stage reads both layouts). The driver joins the
  tasks' rejects into ``rejects.jsonl`` in input order (small: one line per bad line), sums the counts
  and the per-user partial counts, and writes ``users.parquet`` as the local engine does.
- trust: the k-fold reference on Ray is ``trust.ray_reference``, which connects through ``connect`` here.

On a cluster every node must see the inputs and the output folder at the same path (a shared file
system), and have rlhf-organic installed (docs/distributed.md).
"""

from __future__ import annotations

import os
import shutil
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError, UserError
from . import tables
from .dataset_files import part_name, table_path
from .per_file import SUMMARY_COUNTS, Sink, finish, ingest_file
from .schema import OUTPUT_TABLES

_CONNECT_SECONDS = 10
_REJECTS = "_rejects"  # under the output's temporary folder: each task's rejects, removed once joined


def connect(address: str | None, num_cpus: int | None = None):
    """The ``ray`` module, connected: to the cluster at ``address`` (``ray://host:10001``, ``host:6379``,
    ``auto``), or without one to a Ray started on this machine for this process (``num_cpus`` workers).
    An already initialised Ray (a test's, a notebook's) is used as it is."""
    try:
        import ray
    except ImportError:
        raise UserError("engine 'ray' needs Ray: pip install 'rlhf-organic[ray]' (or engine: local)") from None
    if address:  # checked even with Ray initialised: a wrong address is wrong whatever runs here
        _check_reachable(address)
    if ray.is_initialized():
        return ray
    try:
        ray.init(address=address, num_cpus=num_cpus if address is None else None,
                 include_dashboard=False, logging_level="WARNING")
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
        where = f"the Ray cluster at ray_address={address!r}" if address else "a local Ray"
        raise UserError(f"cannot connect to {where}: {exc}".rstrip()) from None
    return ray


def _check_reachable(address: str) -> None:
    """A UserError at once when nothing answers at a host:port address: ``ray.init`` would retry for
    minutes, logging, before it gave up."""
    if address in ("auto", "local"):  # ray.init resolves these itself, and says quickly when there is none
        return
    where = address.removeprefix("ray://")
    host, sep, port = where.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"ray_address {address!r} is not host:port, ray://host:port, auto or local")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_CONNECT_SECONDS).close()
    except OSError as exc:
        raise UserError(f"cannot connect to the Ray cluster at ray_address={address!r}: nothing answers at "
                        f"{host}:{port} ({exc.strerror or exc}); start one there (ray start --head) or fix the "
                        "address") from None


def _ray_get(ray, ref):
    """``ray.get``, with the task's own UserError / InputError raised as it is (the message names the
    file and line), not wrapped in Ray's traceback."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, (UserError, InputError)):
            raise exc.cause from None
        raise


def _ingest_one(index: int, path: Path, fmt: str | None, tmp: Path, part: str, strict: bool, chunk_bytes: int,
                max_context: int, scrub) -> dict[str, Any]:
    """One input file, in a Ray task: the local engine's per-file ingest into part ``part`` of every
    table of the dataset being written in ``tmp``, and its rejects into a file of its own."""
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    messages: list[str] = []  # logged by the driver, in input order
    sink = Sink(tmp, max_context, part=part)
    with open(_rejects_file(tmp, index), "wb") as rejects:
        try:
            outcome = ingest_file(path, fmt, chunk_bytes, sink, rejects, counts, reasons,
                                  strict=strict, scrub=scrub, log=messages.append)
        finally:
            sink.close()
    counts.update(sink.counts)
    return {"counts": counts, "reasons": reasons, "outcome": outcome, "messages": messages, "users": sink.users()}


def _rejects_file(tmp: Path, index: int) -> Path:
    return tmp / _REJECTS / f"{index:06d}.jsonl"


def ingest_into(tmp: Path, found, formats: dict, strict: bool, chunk_bytes: int, max_context: int, scrub,
                log: Callable[[str], None], address: str | None) -> dict:
    """``ingest._ingest_into`` on Ray: the same summary, and the same tables, partitioned (one part per
    input file)."""
    ray = connect(address)
    task = ray.remote(num_cpus=1, max_retries=0)(_ingest_one)  # a retry would find its parts written
    tmp = Path(os.path.abspath(tmp))  # the tasks write there: a path that does not depend on their working folder
    for name in OUTPUT_TABLES:
        if name != "users":  # users.parquet: one file, written by the driver from the summed partials
            table_path(tmp, name).mkdir()
    (tmp / _REJECTS).mkdir()
    n = len(found.files)
    refs = [task.remote(i, path, formats[path], tmp, part_name(i, n), strict, chunk_bytes, max_context, scrub)
            for i, path in enumerate(found.files)]
    counts = Counter({key: 0 for key in SUMMARY_COUNTS})
    reasons: Counter[str] = Counter()
    unreadable = [{"path": p, "reason": why} for p, why in found.unreadable]
    skipped = [{"path": p, "reason": why} for p, why in found.skipped]
    not_read: set[Path] = set()
    unopened, users = 0, []
    try:
        for path, ref in zip(found.files, refs):  # in input order: the first bad file in strict mode is the local one
            result = _ray_get(ray, ref)
            for message in result["messages"]:
                log(message)
            counts.update(result["counts"])
            reasons.update(result["reasons"])  # keys in first-seen order, as the local engine adds them
            outcome = result["outcome"]
            unopened += outcome.unopened
            unreadable += outcome.unreadable
            skipped += outcome.skipped
            if outcome.not_read:
                not_read.add(path)
            users.append(result["users"])
    except BaseException:
        for ref in refs:
            ray.cancel(ref)
        raise
    _join_rejects(tmp, n)
    return finish(tmp, found.files, formats, counts, reasons, tables.combine_user_partials(users),
                  unreadable, skipped, not_read, unopened)


def _join_rejects(tmp: Path, n_files: int) -> None:
    """Every file's rejects, one after the other in input order, into ``rejects.jsonl``: the local one."""
    with open(tmp / "rejects.jsonl", "wb") as rejects:
        for index in range(n_files):
            with open(_rejects_file(tmp, index), "rb") as part:
                shutil.copyfileobj(part, rejects)
    shutil.rmtree(tmp / _REJECTS)
