"""engine: ray gives what engine: local gives: the same dataset, the same accounting, the same trust.

One Ray for the whole module (its start-up takes seconds): local mode, 2 worker CPUs. Skipped, with the
reason shown, where Ray is not installed (pip install 'rlhf-organic[ray]').
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from rlhf_organic.data.ingest import ingest
from rlhf_organic.data.schema import OUTPUT_TABLES
from rlhf_organic.errors import InputError, UserError
from rlhf_organic.simulator.simulate import preset_config, simulate

ray = pytest.importorskip("ray", reason="engine ray needs Ray: pip install 'rlhf-organic[ray]'")


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    """A simulated corpus split over several files, with a corrupt line, a truncated gzip and an empty file."""
    root = tmp_path_factory.mktemp("ray_logs")
    simulate(preset_config("realistic", users=40, seed=3), root / "sim", progress=False)
    logs = root / "logs"
    logs.mkdir()
    shutil.copy(root / "sim" / "logs" / "preferences.jsonl", logs / "preferences.jsonl")
    lines = (root / "sim" / "logs" / "release_data_00.jsonl").read_bytes().splitlines(keepends=True)
    third = len(lines) // 3
    (logs / "a.jsonl").write_bytes(b"".join(lines[:third]))
    (logs / "b.jsonl").write_bytes(b"".join(lines[third : 2 * third]) + b'{"broken\n' + b"[1, 2]\n")
    (logs / "c.jsonl.gz").write_bytes(gzip.compress(b"".join(lines[2 * third :]))[:-200])  # cut short
    (logs / "d.jsonl").write_bytes(b"")
    return logs


def _ingest(logs: Path, out: Path, engine: str, **kwargs) -> tuple[dict, list[str]]:
    said: list[str] = []
    summary = ingest([str(logs)], out, engine=engine, chunk_bytes=64 << 10, progress=False, log=said.append, **kwargs)
    summary.pop("seconds")
    return summary, said


def test_ray_ingest_gives_the_local_dataset_row_for_row(ray_local, logs, tmp_path):
    local, said_local = _ingest(logs, tmp_path / "local", "local")
    on_ray, said_ray = _ingest(logs, tmp_path / "ray", "ray")
    assert on_ray == local  # every count, reject reason, input, unreadable and skipped entry
    assert [m.replace(str(tmp_path / 'ray'), 'OUT') for m in said_ray] == [m.replace(str(tmp_path / 'local'), 'OUT') for m in said_local]
    assert local["rejected"] >= 3 and local["read_errors"] == 1 and local["skipped"]  # the corrupt inputs counted
    for name in OUTPUT_TABLES:  # same rows in the same order: input file order, then line order
        a, b = pq.read_table(tmp_path / "local" / f"{name}.parquet"), pq.read_table(tmp_path / "ray" / f"{name}.parquet")
        assert a.num_rows == b.num_rows and a.equals(b), name
    assert (tmp_path / "ray" / "rejects.jsonl").read_bytes() == (tmp_path / "local" / "rejects.jsonl").read_bytes()
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(p.name for p in (tmp_path / "local").iterdir())
    assert orjson.loads((tmp_path / "ray" / "summary.json").read_bytes())["rejected"] == local["rejected"]


def test_ray_ingest_strict_names_the_first_bad_line_like_local(ray_local, logs, tmp_path):
    with pytest.raises(InputError) as local:
        _ingest(logs, tmp_path / "local", "local", strict=True)
    with pytest.raises(InputError) as on_ray:
        _ingest(logs, tmp_path / "ray", "ray", strict=True)
    assert str(on_ray.value) == str(local.value) and "b.jsonl:" in str(local.value)
    assert not (tmp_path / "ray").exists()  # nothing half-written


def test_unknown_engine_is_a_clear_error(tmp_path, logs):
    with pytest.raises(UserError, match="unknown engine 'spark'; choose one of local, ray"):
        ingest([str(logs)], tmp_path / "out", engine="spark")


def test_summary_json_of_ray_says_the_same_as_local(ray_local, logs, tmp_path):
    _ingest(logs, tmp_path / "local", "local")
    _ingest(logs, tmp_path / "ray", "ray")
    a = json.loads((tmp_path / "local" / "summary.json").read_text())
    b = json.loads((tmp_path / "ray" / "summary.json").read_text())
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    assert np.isfinite(a["lines"])
