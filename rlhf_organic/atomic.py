"""Output folders: written under a temporary name and renamed when complete (no half-written outputs),
marked as written by rlhf-organic, replaced only when so marked, never over or inside an input, and
locked while a run writes into them (docs/safety.md, "What overwrite may delete").

Every output folder the package creates (run and ablation folders, and the dataset, simulation, trust,
reward, judge, base and policy folders) holds a small marker file, ``OUTPUT_MARK``. ``--overwrite`` (and
``output.overwrite``) replace a folder only when it carries that marker, or when it is empty: a folder
of the user's, or the current folder, is never deleted, whatever the flags say.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

from . import __version__
from .errors import UserError

OUTPUT_MARK = ".rlhf_organic"  # in every output folder: "rlhf-organic wrote this folder, it may replace it"
LOCK = ".rlhf_organic.lock"  # in a run (or ablation) folder while a run writes into it: the writer's PID
_PARTIAL = ".partial-"  # a folder being written: ``.NAME.partial-PID`` beside ``NAME``


def mark_output(folder: Path, kind: str) -> None:
    """Leave the marker that lets a later ``--overwrite`` replace ``folder`` (``kind``: what it holds)."""
    text = json.dumps({"written_by": "rlhf-organic", "version": __version__, "kind": kind}) + "\n"
    (Path(folder) / OUTPUT_MARK).write_text(text, encoding="utf-8")


def is_output(folder: Path) -> bool:
    """Whether ``folder`` (or the folder a link there leads to) was written by rlhf-organic: it holds the marker."""
    return Path(folder).is_dir() and (Path(folder) / OUTPUT_MARK).is_file()


def is_empty(folder: Path) -> bool:
    """No entry but the package's own marker and lock files (which an interrupted start may leave).
    A folder that cannot be listed is not known to be empty."""
    try:
        with os.scandir(folder) as entries:
            return all(entry.name in (OUTPUT_MARK, LOCK) for entry in entries)
    except OSError:
        return False


def _real(path) -> str:
    return os.path.realpath(os.path.abspath(path))  # realpath: never raises, even on a link loop


def overlap(out: Path, inputs: Iterable[tuple[str, Path]]) -> str | None:
    """Why ``out`` may not be written, or None: it is, contains or sits inside one of ``inputs``.

    ``inputs``: (what, path) pairs, ``what`` naming the input in the message ("input", "recipe").
    Paths are compared after following symbolic links, so a link cannot hide an input.
    """
    target = _real(out)
    for what, path in inputs:
        real = _real(path)
        if target == real:
            relation = "is"
        elif os.path.commonpath([target, real]) == target:
            relation = "contains"
        elif os.path.commonpath([target, real]) == real:
            relation = "sits inside"
        else:
            continue
        return (f"{out} {relation} the {what} {path}: an output may not be, contain or sit inside an input "
                "(replacing it would delete the input, and the next read of the input would read it); "
                "choose an output folder outside the inputs")
    return None


def not_ours(out: Path) -> str:
    return (f"{out} was not written by rlhf-organic (it has no {OUTPUT_MARK} marker file), so it is never "
            "replaced or deleted, whatever --overwrite / output.overwrite say; choose a new or empty folder")


def check_free(out: Path, overwrite: bool, inputs: Iterable[tuple[str, Path] | Path | str] = ()) -> None:
    """Refuse, with a clear ``UserError``, to write the output folder ``out`` where that could lose data.

    Refused: ``out`` is, contains or sits inside one of ``inputs`` (paths, or (what, path) pairs); ``out``
    exists and is not a folder; ``out`` is a non-empty folder and ``overwrite`` is off; ``out`` is a
    non-empty folder without the package's marker (``overwrite`` or not). An empty folder is used as is.
    """
    out = Path(out)
    pairs = [item if isinstance(item, tuple) else ("input", Path(item)) for item in inputs if item is not None]
    if (why := overlap(out, pairs)) is not None:
        raise UserError(why)
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; choose another output folder")
    if is_empty(out):
        return
    if not overwrite:
        raise UserError(f"{out} already exists; choose another --out or pass --overwrite")
    if not is_output(out):
        raise UserError(not_ours(out))


def remove_output(out: Path) -> None:
    """Delete the output folder ``out``: only one the package marked, an empty one, or a link (unlinked,
    never followed). Anything else is refused: the last guard before ``shutil.rmtree``."""
    out = Path(out)
    if out.is_symlink():
        out.unlink()
    elif not out.exists():
        return
    elif out.is_dir() and (is_output(out) or is_empty(out)):
        shutil.rmtree(out)
    else:
        raise UserError(not_ours(out))


def empty_output(out: Path) -> None:
    """Delete what the marked folder ``out`` holds but keep the folder, its marker and its lock: the
    folder may be the current one, or hold the lock of the run replacing it."""
    if not is_output(out):
        raise UserError(not_ours(out))
    for entry in Path(out).iterdir():
        if entry.name in (OUTPUT_MARK, LOCK):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _running(pid: int) -> bool:
    """Whether a process with this id exists (another user's counts: it cannot be signalled, but runs)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


def remove_stale_partials(out: Path) -> list[Path]:
    """Delete the ``.NAME.partial-PID`` folders beside ``out`` left by killed processes: the PID is not
    running (or is this process's own: an earlier attempt) and the folder carries the marker, or holds
    nothing but the package's own files (a process killed between creating the folder and marking it).
    Returns what it deleted. A partial folder of a live process is being written: it is left alone."""
    out = Path(out)
    removed = []
    for partial in out.parent.glob(f".{glob.escape(out.name)}{_PARTIAL}*"):
        pid = partial.name.rpartition(_PARTIAL)[2]
        if not pid.isdigit() or (int(pid) != os.getpid() and _running(int(pid))) or not (
                is_output(partial) or is_empty(partial)):
            continue
        shutil.rmtree(partial, ignore_errors=True)
        removed.append(partial)
    return removed


@contextmanager
def atomic_dir(out: str | Path, kind: str = "output"):
    """Yields a temporary folder beside ``out``; on success it replaces ``out``, on failure it is removed.

    The folder carries the marker (``kind`` says what it holds) from the start, so that a later run may
    clean it up if this process is killed (``remove_stale_partials``, called here first) and replace the
    finished folder with ``--overwrite``. An existing ``out`` is replaced only if ``remove_output`` allows.

    In a multi-process run (``rlhf_organic.distributed``) only the main process writes ``out``: the others
    get a throwaway folder elsewhere, removed when they leave, and every process waits on success until
    ``out`` is complete, so the command ends with exactly one complete folder.
    """
    from . import distributed

    out = Path(out)
    several = distributed.world() > 1
    if several:
        distributed.barrier()  # every process has checked ``out`` (check_free) before the main one replaces it
    if not distributed.is_main():
        scratch = Path(tempfile.mkdtemp(prefix=f"rlhf_organic-rank{distributed.rank()}-"))
        try:
            yield scratch
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        distributed.barrier()
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out)
    tmp = out.parent / f".{out.name}{_PARTIAL}{os.getpid()}"
    tmp.mkdir()
    try:
        mark_output(tmp, kind)
        yield tmp
        remove_output(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if several:
        distributed.barrier()


@contextmanager
def locked(folder: Path, *, what: str = "run folder", log: Callable[[str], None] = lambda message: None):
    """Hold ``folder``'s lock for the block: a second process asking for it meanwhile is refused with a
    ``UserError`` naming the holder's PID.

    The lock is an advisory ``flock`` on ``LOCK`` inside the folder, which holds the holder's PID. The
    kernel drops the lock when its process ends, however it ends (kill -9 included), so a lock file left
    by a dead process is simply taken over (and said so); the file is removed when the block ends.
    """
    import fcntl

    path = Path(folder) / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise UserError(f"{what} {folder} is in use by process {holder or '(unknown)'} (lock file {path}): "
                            "two runs must not write one folder; wait for it to end, or stop it") from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder ended and removed the file between our open and our lock: open it afresh
    try:
        previous = _read_pid(fd)
        if previous and previous != os.getpid():
            log(f"taking over the lock of {folder} left by process {previous}, which is no longer running")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        try:
            path.unlink()  # while still locked: a waiting process then opens a new file (the inode check above)
        except FileNotFoundError:
            pass
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


def write_text(path: str | Path, text: str) -> None:
    """Write a file through a temporary file beside it and a rename: readers see the old or the new
    content, never half of it."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
