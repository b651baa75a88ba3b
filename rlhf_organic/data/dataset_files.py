"""The tables of an ingested dataset on disk, in either layout, and the one place that opens them.

A table ``<name>.parquet`` is one Parquet file (``engine: local``), or a folder of part files, one per
input file, written by the Ray tasks themselves (``engine: ray``: ``<name>.parquet/part-000000.parquet``,
``part-000001.parquet``, ...), whose names sort in input order. Read in name order, the parts are the
local engine's file, row for row. pyarrow reads such a folder as one table in that order too
(``pyarrow.parquet.read_table``: its dataset discovery sorts the file paths it finds, and the scanner puts
the table together fragment by fragment, in that order), and so do ``pandas.read_parquet`` and anything
else built on it. The package itself lists the parts here and reads them in name order, so that order
does not rest on a reader's discovery.

Every stage that reads a dataset table (or a trust folder's, which are always single files) goes through
``has_table`` / ``read_table`` / ``table_schema`` / ``iter_batches``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ..errors import UserError
from .schema import OUTPUT_TABLES

_PART_DIGITS = 6  # at least: part names stay the same width, so that name order is input order


def table_path(folder: str | Path, name: str) -> Path:
    """Where the table ``name`` of the dataset ``folder`` lives, whichever layout it has."""
    return Path(folder) / f"{name}.parquet"


def part_name(index: int, count: int) -> str:
    """The file name of part ``index`` of ``count``: ``part-000000.parquet``; wider for over a million
    parts, all of them alike, so that the names sort as the numbers do."""
    digits = max(_PART_DIGITS, len(str(max(count - 1, 0))))
    return f"part-{index:0{digits}d}.parquet"


def has_table(path: str | Path) -> bool:
    """Whether the table at ``path`` (``<folder>/<name>.parquet``) is there: a file, or a folder of parts."""
    path = Path(path)
    return path.is_file() or path.is_dir()


def parts(path: str | Path) -> list[Path]:
    """The files of the table at ``path``: itself when it is one file, else its part files in name order
    (names starting with ``.`` or ``_`` left out, as pyarrow leaves them out)."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    return sorted((p for p in path.iterdir() if p.name.endswith(".parquet") and not p.name.startswith((".", "_"))),
                  key=lambda p: p.name)


def _dataset(path: Path) -> ds.Dataset:
    files = parts(path)
    if files:  # the first part's schema: every part of a table is written with the same one
        return ds.dataset([str(p) for p in files], format="parquet")
    schema = OUTPUT_TABLES.get(path.name.removesuffix(".parquet"))
    if schema is None:
        raise UserError(f"{path} is a folder with no Parquet part files in it")
    return ds.dataset(schema.empty_table())  # no part at all: no rows, with the dataset's columns


def table_schema(path: str | Path) -> pa.Schema:
    """The columns of the table at ``path``."""
    return _dataset(Path(path)).schema


def read_table(path: str | Path, columns: list[str] | None = None, filters: ds.Expression | None = None) -> pa.Table:
    """The table at ``path`` (``columns`` of it, rows matching the pyarrow expression ``filters``), its
    parts one after the other in name order."""
    return _dataset(Path(path)).to_table(columns=columns, filter=filters)


def iter_batches(path: str | Path, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The table at ``path`` in record batches of at most ``batch_rows`` rows, part after part in name
    order; one part file open at a time, read as ``ParquetFile.iter_batches`` reads one file."""
    for file in parts(path):
        with pq.ParquetFile(file) as part:
            yield from part.iter_batches(batch_size=batch_rows, columns=columns)
