"""Write an output folder under a temporary name and rename it when complete: no half-written outputs."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


def check_free(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; choose another --out or pass --overwrite")


@contextmanager
def atomic_dir(out: str | Path):
    """Yields a temporary folder beside ``out``; on success it replaces ``out``, on failure it is removed.

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
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if several:
        distributed.barrier()


def write_text(path: str | Path, text: str) -> None:
    """Write a file through a temporary file beside it and a rename: readers see the old or the new
    content, never half of it."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
