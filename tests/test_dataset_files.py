"""A dataset table as one Parquet file or as a folder of part files (engine: ray): read the same, in
part-name order, by the package (``data.dataset_files``) and by plain pyarrow and pandas."""

from __future__ import annotations

import random

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from rlhf_organic.data.dataset_files import has_table, iter_batches, part_name, parts, read_table, table_schema
from rlhf_organic.data.schema import EXAMPLES, FEEDBACK
from rlhf_organic.errors import UserError

N_PARTS = 13  # past 10: part-000010 must come after part-000009, not after part-000001


def _feedback(start: int, rows: int) -> pa.Table:
    return pa.table({
        "kind": ["thumbs"] * rows, "user_id": [f"u{i % 3}" for i in range(start, start + rows)],
        "conversation_id": [f"c{i}" for i in range(start, start + rows)],
        "example_id": [f"c{i}:1" for i in range(start, start + rows)], "preference_id": [None] * rows,
        "value": [float(i) for i in range(start, start + rows)], "label": [None] * rows,
    }, schema=FEEDBACK)


@pytest.fixture
def partitioned(tmp_path):
    """feedback.parquet as 13 parts (some of no rows), written in shuffled order, and the same rows as one file."""
    folder = tmp_path / "parts" / "feedback.parquet"
    folder.mkdir(parents=True)
    sizes = [3, 0, 5, 1, 0, 4, 2, 6, 1, 0, 3, 2, 7]
    starts = [sum(sizes[:i]) for i in range(N_PARTS)]
    order = list(range(N_PARTS))
    random.Random(0).shuffle(order)
    for i in order:  # a directory listing in creation order would not be name order
        pq.write_table(_feedback(starts[i], sizes[i]), folder / part_name(i, N_PARTS))
    single = tmp_path / "single" / "feedback.parquet"
    single.parent.mkdir()
    pq.write_table(_feedback(0, sum(sizes)), single)
    return folder, single


def test_part_names_sort_as_their_numbers():
    assert part_name(7, 13) == "part-000007.parquet"
    assert part_name(7, 2_000_000) == "part-0000007.parquet"  # past a million parts: wider, all alike
    names = [part_name(i, 1_000_001) for i in range(0, 1_000_001, 99_999)]
    assert names == sorted(names)


def test_a_partitioned_table_reads_as_the_single_file_in_part_order(partitioned):
    folder, single = partitioned
    assert [p.name for p in parts(folder)] == [part_name(i, N_PARTS) for i in range(N_PARTS)]
    whole = pq.read_table(single)
    assert has_table(folder) and has_table(single) and not has_table(folder.parent / "examples.parquet")
    assert read_table(folder).equals(whole)
    assert table_schema(folder).names == FEEDBACK.names
    assert pq.read_table(folder).equals(whole)  # plain pyarrow: its discovery sorts the paths too
    assert pd.read_parquet(folder).equals(pd.read_parquet(single))
    keep = pc.field("value") >= 10
    assert read_table(folder, columns=["example_id", "value"], filters=keep).equals(
        pq.read_table(single, columns=["example_id", "value"], filters=keep))
    batches = list(iter_batches(folder, ["value"], batch_rows=2))
    assert max(b.num_rows for b in batches) <= 2
    assert pa.Table.from_batches(batches).column("value").to_pylist() == whole.column("value").to_pylist()


def test_a_table_of_no_part_reads_as_no_rows_with_the_dataset_columns(tmp_path):
    folder = tmp_path / "examples.parquet"
    folder.mkdir()
    (folder / "_SUCCESS").write_text("")  # left out, as pyarrow leaves such names out
    assert parts(folder) == []
    table = read_table(folder)
    assert table.num_rows == 0 and table.schema.equals(EXAMPLES)
    assert read_table(folder, columns=["example_id", "thumbs"]).schema.names == ["example_id", "thumbs"]
    assert table_schema(folder).equals(EXAMPLES) and list(iter_batches(folder, ["context"], 10)) == []
    other = tmp_path / "scores.parquet"
    other.mkdir()
    with pytest.raises(UserError, match="no Parquet part files"):
        read_table(other)
