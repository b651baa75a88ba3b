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
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlhf_organic.data.dataset_files import part_name, parts, read_table, table_path
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
    n_files = len(list(logs.iterdir()))  # the empty one and the truncated one included
    for name in OUTPUT_TABLES:  # same rows in the same order: input file order, then line order
        a, b = read_table(table_path(tmp_path / "local", name)), read_table(table_path(tmp_path / "ray", name))
        assert a.num_rows == b.num_rows and a.equals(b), name
        assert table_path(tmp_path / "local", name).is_file()  # the local engine: one file per table
        if name == "users":  # summed on the driver from every file's partial counts: one file
            assert table_path(tmp_path / "ray", name).is_file()
            continue
        # partitioned: one part per input file, written by its task, names in input order
        assert [p.name for p in parts(table_path(tmp_path / "ray", name))] == [part_name(i, n_files) for i in range(n_files)]
        assert pq.read_table(table_path(tmp_path / "ray", name)).equals(a), name  # plain pyarrow reads it as one table
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


@pytest.fixture(scope="module")
def dataset(logs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ray_dataset") / "dataset"
    ingest([str(logs)], out, progress=False, log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def ray_dataset(ray_local, logs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ray_dataset_parts") / "dataset"
    ingest([str(logs)], out, engine="ray", progress=False, log=lambda _: None)
    return out


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and bool(np.all(a == b))
    return a == b


def test_stages_read_a_partitioned_dataset_as_the_single_file_one(dataset, ray_dataset, tmp_path):
    """inspect, trust (its data and its whole output), reward data and the policy's evaluation contexts
    give the same from the Ray dataset (tables as folders of parts) as from the local one."""
    import dataclasses

    from rlhf_organic.data.inspect import inspect_dataset
    from rlhf_organic.evaluation.policy import eval_contexts
    from rlhf_organic.reward.data import load_reward_data
    from rlhf_organic.trust.config import settings_from_cli
    from rlhf_organic.trust.data import load_feedback
    from rlhf_organic.trust.stage import compute_trust

    assert table_path(ray_dataset, "examples").is_dir() and table_path(dataset, "examples").is_file()
    a, b = inspect_dataset(dataset), inspect_dataset(ray_dataset)
    assert a.pop("dataset") != b.pop("dataset") and a == b
    a, b = load_feedback(dataset), load_feedback(ray_dataset)
    for field in dataclasses.fields(a):
        assert _same(getattr(a, field.name), getattr(b, field.name)), field.name
    assert len(a.example_ids) and len(a.preference_ids) and any(a.prompt)
    for name, data in (("local", dataset), ("ray", ray_dataset)):
        compute_trust(data, tmp_path / name, settings_from_cli("per_user", []), seed=7, progress=False,
                      log=lambda _: None)
    for name in ("users", "examples", "preferences"):
        assert pq.read_table(tmp_path / "local" / f"{name}.parquet").equals(pq.read_table(tmp_path / "ray" / f"{name}.parquet")), name
    a, b = load_reward_data(dataset, tmp_path / "local"), load_reward_data(ray_dataset, tmp_path / "ray")
    pd.testing.assert_frame_equal(a.point, b.point)
    pd.testing.assert_frame_equal(a.pairs, b.pairs)
    assert len(a.point) and len(a.pairs)
    pd.testing.assert_frame_equal(eval_contexts(dataset, 0.3, 1, 20), eval_contexts(ray_dataset, 0.3, 1, 20))


def test_ray_tables_of_no_rows_at_all_keep_their_columns(ray_local, logs, tmp_path):
    """A/B choices only (no conversation), a file of nothing but bad lines, an empty file: every part of
    the conversation tables holds no row, and the tables read with the dataset's columns."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(logs / "preferences.jsonl", inputs / "a.jsonl")
    (inputs / "b.jsonl").write_bytes(b'{"broken\n[1, 2]\n')
    (inputs / "c.jsonl").write_bytes(b"")
    local, _ = _ingest(inputs, tmp_path / "local", "local", fmt="preference")
    on_ray, _ = _ingest(inputs, tmp_path / "ray", "ray", fmt="preference")
    assert on_ray == local and local["conversations"] == 0 and local["rejected"] == 2 and local["preferences"] > 0
    for name, schema in OUTPUT_TABLES.items():
        a, b = read_table(table_path(tmp_path / "local", name)), read_table(table_path(tmp_path / "ray", name))
        assert a.equals(b) and b.schema.equals(schema), name
        if name != "users":
            assert len(parts(table_path(tmp_path / "ray", name))) == 3, name
    assert read_table(table_path(tmp_path / "ray", "examples")).num_rows == 0
    assert (tmp_path / "ray" / "rejects.jsonl").read_bytes() == (tmp_path / "local" / "rejects.jsonl").read_bytes()


@pytest.mark.parametrize("scheme", ["combined", "per_user"])
def test_ray_trust_gives_the_local_trust_and_weights(ray_local, dataset, tmp_path, scheme):
    from rlhf_organic.trust.config import settings_from_cli
    from rlhf_organic.trust.stage import compute_trust

    local = settings_from_cli(scheme, [])
    on_ray = local.model_copy(update={"engine": "ray"})
    for name, settings in (("local", local), ("ray", on_ray)):
        compute_trust(dataset, tmp_path / name, settings, seed=7, progress=False, log=lambda _: None)
    for table, column in (("users", "trust"), ("examples", "weight"), ("preferences", "weight")):
        a = pq.read_table(tmp_path / "local" / f"{table}.parquet")
        b = pq.read_table(tmp_path / "ray" / f"{table}.parquet")
        assert a.num_rows == b.num_rows > 0, table
        floats = [f.name for f in a.schema if pa.types.is_floating(f.type)]
        assert a.drop_columns(floats).equals(b.drop_columns(floats)), table  # ids, thumbs, counts: exactly
        for name in floats:  # every float column (trust, weights, the evidence behind them) to 1e-9
            np.testing.assert_allclose(b.column(name).to_numpy(zero_copy_only=False),
                                       a.column(name).to_numpy(zero_copy_only=False), rtol=0, atol=1e-9, err_msg=name)
        assert column in floats
    a = pq.read_table(tmp_path / "local" / "users.parquet").column("trust").to_numpy()
    assert a.min() < a.max()  # the scheme told users apart: the comparison is not of constants


def test_ray_reference_draws_the_local_bounded_sample(ray_local):
    """Past reference.max_train, each fold trains on the same seeded sample of rows on both engines."""
    from rlhf_organic.trust.ray_reference import held_out_probabilities as on_ray
    from rlhf_organic.trust.reference import ReferenceConfig, held_out_probabilities

    rng = np.random.default_rng(0)
    n, n_users = 6000, 300
    words = np.array(["good", "great", "bad", "awful", "fine", "rude", "kind", "wrong", "right", "ok"])
    label = rng.integers(0, 2, n).astype(np.int8)
    texts = [" ".join(rng.choice(words[:5] if y else words[5:], 4)) + f" w{rng.integers(50)}" for y in label]
    user = rng.integers(0, n_users, n)
    cfg = ReferenceConfig(folds=3, max_train=1000)
    weights = (rng.random(n) > 0.1).astype(np.float64)
    local = held_out_probabilities(texts, label, user, n_users, cfg, seed=5, weights=weights)
    ray_p = on_ray(texts, label, user, n_users, cfg, seed=5, weights=weights, batch_rows=1000)
    np.testing.assert_allclose(ray_p, local, rtol=0, atol=1e-9)
    changed = held_out_probabilities(texts, label, user, n_users, cfg, seed=6, weights=weights)
    assert np.abs(changed - local).max() > 1e-6  # another seed draws another sample: the bound is active

    from rlhf_organic.trust.ray_reference import held_out_text_probabilities as texts_on_ray
    from rlhf_organic.trust.reference import NgramClassifier, held_out_text_probabilities

    # the replies of A/B choices: scored by the fold model that never saw their user (-1: no user)
    replies = [" ".join(rng.choice(words, 3)) for _ in range(200)]
    reply_user = rng.integers(-1, n_users, 200)
    x = NgramClassifier.from_config(cfg).features(texts)
    local = held_out_text_probabilities(replies, reply_user, x, label, user, n_users, cfg, seed=5, weights=weights)
    ray_p = texts_on_ray(replies, reply_user, label, texts, user, n_users, cfg, seed=5, weights=weights)
    np.testing.assert_allclose(ray_p, local, rtol=0, atol=1e-9)


def test_cli_engine_ray_and_a_bad_address_is_a_clear_error(ray_local, logs, tmp_path):
    from click.testing import CliRunner

    from rlhf_organic.cli import main

    runner = CliRunner()
    ok = runner.invoke(main, ["ingest", str(logs), "--out", str(tmp_path / "ds"), "--engine", "ray", "-q"])
    assert ok.exit_code == 0, ok.output
    assert pq.read_table(tmp_path / "ds" / "examples.parquet").num_rows > 0
    for command in (["ingest", str(logs), "--out", str(tmp_path / "no")],
                    ["trust", str(tmp_path / "ds"), "--out", str(tmp_path / "no_trust")]):
        bad = runner.invoke(main, [*command, "--engine", "ray", "--ray-address", "127.0.0.1:1", "-q"])
        assert bad.exit_code != 0
        assert "cannot connect to the Ray cluster at ray_address='127.0.0.1:1'" in bad.output, bad.output
        assert not (tmp_path / "no").exists() and not (tmp_path / "no_trust").exists()


def test_recipe_takes_the_engine_settings_and_refuses_an_unknown_engine(tmp_path):
    from rlhf_organic.errors import RecipeError
    from rlhf_organic.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("name: r\ndata: {engine: ray, ray_address: 'head:6379'}\ntrust: {engine: ray}\n")
    recipe = load_recipe(path)
    assert (recipe.data.engine, recipe.data.ray_address, recipe.trust.engine) == ("ray", "head:6379", "ray")
    path.write_text("name: r\ndata: {engine: spark}\n")
    with pytest.raises(RecipeError, match="data.engine"):
        load_recipe(path)


def test_ray_reference_runs_with_one_free_worker_cpu(ray_local):
    """With one CPU free (bench/scale.py's 1-worker run) the predictions still run: an actor pool once
    held that CPU and starved the tasks feeding it."""
    import threading

    from rlhf_organic.trust.ray_reference import held_out_probabilities as on_ray
    from rlhf_organic.trust.reference import ReferenceConfig, held_out_probabilities

    @ray.remote(num_cpus=1)
    class Holder:  # takes one of the two CPUs for the length of the test
        def ready(self) -> bool:
            return True

    holder = Holder.remote()
    ray.get(holder.ready.remote())
    rng = np.random.default_rng(1)
    label = rng.integers(0, 2, 400).astype(np.int8)
    texts = [("fine thanks" if y else "go away") + f" {i % 7}" for i, y in enumerate(label)]
    user = rng.integers(0, 40, 400)
    cfg = ReferenceConfig(folds=2)
    answer: dict = {}
    worker = threading.Thread(target=lambda: answer.update(p=on_ray(texts, label, user, 40, cfg, batch_rows=100)),
                              daemon=True)
    worker.start()
    worker.join(timeout=120)
    ray.kill(holder)
    assert "p" in answer, "the Ray reference did not finish with one worker CPU free"
    np.testing.assert_allclose(answer["p"], held_out_probabilities(texts, label, user, 40, cfg), rtol=0, atol=1e-9)


def test_where_a_stage_runs_is_not_part_of_its_fingerprint(tmp_path):
    """A run moved to Ray reuses its finished ingest and trust stages: the output is the same."""
    from rlhf_organic.pipeline import plan_stages
    from rlhf_organic.recipe import load_recipe

    settings = {}
    for engine, text in (("local", "name: r\n"),
                         ("ray", "name: r\ndata: {engine: ray}\ntrust: {engine: ray, ray_address: 'head:6379'}\n")):
        path = tmp_path / f"{engine}.yaml"
        path.write_text(text)
        stages = plan_stages(load_recipe(path), tmp_path / engine, log=lambda _: None)
        settings[engine] = {s.name: s.settings for s in stages if s.name in ("ingest", "trust")}
    assert settings["local"] == settings["ray"] and set(settings["local"]) == {"ingest", "trust"}
