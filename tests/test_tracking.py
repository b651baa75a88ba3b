"""Experiment tracking with wandb (offline) and trackio (a local database): a tiny pipeline's stage metrics
and training loss curves arrive under the documented names and steps, nothing keyed by text from the data
leaks into a metric name, ``--resume`` gives a complete new tracker run, and a stage resumed from a
training checkpoint replays the restored steps. The tensorboard side is in test_pipeline.py.

wandb is read back from the offline run's ``.wandb`` file (a LevelDB-style log of protobuf records, read
here without wandb's network API); trackio from its SQLite database in ``TRACKIO_DIR``.
"""

import json
import math
import re
import sqlite3
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rlhf_organic import tracking
from rlhf_organic.cli import main
from rlhf_organic.pipeline import MARKER

STAGES = ["simulate", "ingest", "trust", "reward"]  # the order plan_stages gives them: pipeline/stage 1..4
FOLDERS = {"simulate": "simulation", "ingest": "dataset", "trust": "trust", "reward": "reward"}
NAME = re.compile(r"^(pipeline/stage|[a-z_]+/(seconds|peak_rss_mb|reused|train/[a-z_]+|metrics(/[A-Za-z0-9_.+-]+)+))$")


def _recipe(tmp_path: Path) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\ndata: {{simulate: {{preset: tiny, users: 20}}}}\ntrust: {{scheme: safety_filter}}\n"
                    f"output: {{dir: '{tmp_path}/runs/{{name}}', report_to: none}}\n"
                    "reward: {spec: tiny, override: {train: {epochs: 0.5}}}\n")
    return path


def _run(path: Path, *args: str):
    return CliRunner().invoke(main, ["run", str(path), "-q", *args])


# --- reading back -----------------------------------------------------------------------------------

def _wandb_records(path: Path):
    """The protobuf records of a ``.wandb`` file: a 7-byte header (``:W&B``, magic, version), then 32 KiB
    blocks of chunks, each with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, payload = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        payload = chunk if kind in (1, 2) else payload + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(payload)
            yield record


def _item_value(item):
    kind = item.WhichOneof("value")
    if kind is None:
        return json.loads(item.value_json)
    return None if kind == "none" else getattr(item, kind)


def _wandb_runs(root: Path) -> list[dict]:
    """Each offline run under ``root``: its run record, config, history rows, metric definitions, exit code."""
    import wandb

    wandb.teardown()  # run.finish() may return before wandb's service has written the last records
    runs = []
    for folder in sorted(root.glob("offline-run-*")):
        run = {"history": [], "metrics": {}, "config": {}, "exit": None, "folder": folder}
        for record in _wandb_records(next(folder.glob("run-*.wandb"))):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run["run"] = record.run
                run["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
            elif kind == "config":
                run["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
            elif kind == "history":
                run["history"].append({"/".join(i.nested_key) or i.key: _item_value(i) for i in record.history.item})
            elif kind == "metric":
                run["metrics"][record.metric.name] = record.metric.step_metric
            elif kind == "exit":
                run["exit"] = record.exit.exit_code
        runs.append(run)
    return runs


def _trackio_runs(trackio_dir: Path, project: str = "rlhf_organic") -> dict[str, list[dict]]:
    """run id -> its logged rows (``step`` and the metrics) in trackio's database, in logging order."""
    with sqlite3.connect(trackio_dir / f"{project}.db") as db:
        rows = db.execute("SELECT run_id, run_name, step, metrics FROM metrics ORDER BY id").fetchall()
    runs: dict[str, list[dict]] = {}
    for run_id, name, step, metrics in rows:
        runs.setdefault(run_id, []).append({"run_name": name, "step": step, **json.loads(metrics)})
    return runs


def _curve(rows: list[dict], key: str, axis: str = "step") -> list[tuple[int, float]]:
    return [(int(r[axis]), r[key]) for r in rows if key in r]


def _same(curve: list[tuple[int, float]], expected: list[tuple[int, float]]) -> bool:
    """The same steps, and the same values up to float32 rounding."""
    return [s for s, _ in curve] == [s for s, _ in expected] and \
        [v for _, v in curve] == pytest.approx([v for _, v in expected], rel=1e-6)


@pytest.fixture
def trackio_dir(tmp_path, monkeypatch):
    """trackio reads TRACKIO_DIR when imported: set it first, and re-point its modules if already imported."""
    folder = tmp_path / "trackio"
    monkeypatch.setenv("TRACKIO_DIR", str(folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # trackio asks the hub who the user is when a token is stored
    pytest.importorskip("trackio")
    for name, module in list(sys.modules.items()):
        if name.startswith("trackio") and isinstance(getattr(module, "TRACKIO_DIR", None), Path):
            monkeypatch.setattr(module, "TRACKIO_DIR", folder)
    return folder


@pytest.fixture
def fresh_wandb():
    """wandb reads its environment once per process (its setup singleton): a fresh one for each test."""
    wandb = pytest.importorskip("wandb")
    wandb.teardown()
    yield
    wandb.teardown()


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch, fresh_wandb):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_DIR", "WANDB_PROJECT", "WANDB_NAME", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(name, raising=False)
    for name in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):  # nothing written in the home folder
        monkeypatch.setenv(name, str(tmp_path / name.lower()))


# --- the tests --------------------------------------------------------------------------------------

def test_wandb_and_trackio_get_stage_metrics_and_loss_curves_and_a_new_run_on_resume(
        tmp_path, wandb_offline, trackio_dir):
    path = _recipe(tmp_path)
    res = _run(path, "output.report_to=[tensorboard, wandb, trackio]")
    assert res.exit_code == 0, res.output
    assert res.stderr == "" and "Trackio" not in res.stdout  # -q: the trackers' chatter goes to the (silenced) log
    run = tmp_path / "runs" / "t"
    history = json.loads((run / "reward" / "history.json").read_text())
    losses = [(i, row["loss"]) for i, row in enumerate(history, 1)]
    markers = {s: json.loads((run / FOLDERS[s] / MARKER).read_text()) for s in STAGES}
    reasons = set(markers["ingest"]["metrics"]["dislike_reasons"])  # text from the data
    assert reasons

    # wandb: one offline run in the run folder, named after the recipe, the recipe as its config
    (w,) = _wandb_runs(run / "wandb")
    assert (w["run"].project, w["run"].display_name, w["exit"]) == ("rlhf_organic", "t", 0)
    assert w["config"]["trust"]["scheme"] == "safety_filter" and w["config"]["name"] == "t"
    assert _same(_curve(w["history"], "reward/train/loss", "reward/train/step"), losses)
    assert w["metrics"]["reward/train/loss"] == "reward/train/step"
    assert w["metrics"]["trust/metrics/user/auc"] == "pipeline/stage"
    for number, stage in enumerate(STAGES, 1):
        (row,) = [r for r in w["history"] if f"{stage}/seconds" in r]
        assert row["pipeline/stage"] == number and row[f"{stage}/reused"] == 0
        assert row[f"{stage}/seconds"] == pytest.approx(markers[stage]["seconds"])
    (row,) = [r for r in w["history"] if "trust/metrics/user/auc" in r]
    assert row["trust/metrics/user/auc"] == pytest.approx(markers["trust"]["metrics"]["user"]["auc"])

    # trackio: one run in the project's database, each point at its own step
    (t,) = _trackio_runs(trackio_dir).values()
    assert {r["run_name"] for r in t} == {"t"}
    with sqlite3.connect(trackio_dir / "rlhf_organic.db") as db:
        (config,) = db.execute("SELECT config FROM configs").fetchone()
    assert json.loads(config)["trust"]["scheme"] == "safety_filter"
    assert _same(_curve(t, "reward/train/loss"), losses)
    assert _same(_curve(t, "trust/metrics/user/auc"), [(3, markers["trust"]["metrics"]["user"]["auc"])])
    assert _curve(t, "reward/peak_rss_mb") == [(4, markers["reward"]["peak_rss_mb"])]

    # the same names everywhere, all of the documented shapes, none built from text in the data
    wandb_names = {k for r in w["history"] for k in r if not k.startswith("_")}
    trackio_names = {k for r in t for k in r if k not in ("run_name", "step", "timestamp")}
    assert wandb_names - {"pipeline/stage", "reward/train/step"} == trackio_names
    for name in trackio_names:
        assert NAME.match(name), name
        assert not set(name.split("/")) & (tracking.PRIVATE | reasons), name

    # --resume: a new run in each tracker with the whole pipeline again, every stage reused
    res = _run(path, "--resume", "output.report_to=[wandb, trackio]")
    assert res.exit_code == 0, res.output
    first, again = _wandb_runs(run / "wandb")
    assert again["run"].run_id != first["run"].run_id and again["run"].display_name == "t"
    assert _same(_curve(again["history"], "reward/train/loss", "reward/train/step"), losses)
    assert all(r["reward/reused"] == 1 for r in again["history"] if "reward/reused" in r)
    runs = _trackio_runs(trackio_dir)
    assert len(runs) == 2
    resumed = [rows for rows in runs.values() if rows is not t][-1]
    assert _same(_curve(resumed, "reward/train/loss"), losses)
    assert _curve(resumed, "trust/reused") == [(3, 1)]


def test_wandb_online_without_a_login_is_a_clear_error(tmp_path, monkeypatch, fresh_wandb):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no settings file
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\ndata: {{simulate: {{preset: tiny, users: 20}}}}\n"
                    f"output: {{dir: '{tmp_path}/runs/t', report_to: [wandb]}}\n")
    res = _run(path)
    assert res.exit_code == 2 and "wandb could not start a run" in res.stderr and "WANDB_MODE=offline" in res.stderr
    assert not (tmp_path / "runs" / "t" / "simulation").exists()  # stopped before any stage


def test_a_failed_run_finishes_its_wandb_run_as_failed(tmp_path, wandb_offline):
    path = tmp_path / "f.yaml"
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "bad.jsonl").write_text("{not json\n")  # the ingest stage fails on it, tracking already on
    path.write_text(f"name: f\ndata: {{source: files, strict: true, inputs: ['{tmp_path}/logs/*.jsonl']}}\n"
                    f"output: {{dir: '{tmp_path}/runs/f', report_to: [wandb]}}\n")
    res = _run(path)
    assert res.exit_code == 2 and "bad.jsonl" in res.stderr
    (w,) = _wandb_runs(tmp_path / "runs" / "f" / "wandb")
    assert w["exit"] == 1


class _Backend:
    def __init__(self):
        self.points = []
        self.closed = None

    def log(self, scalars, step, axis):
        self.points += [(axis, step, key, value) for key, value in scalars.items()]

    def close(self, failed):
        self.closed = failed


def test_stage_metrics_leave_out_private_and_non_numeric_values(tmp_path):
    backend = _Backend()
    tracker = tracking.Tracker([backend])
    marker = {"seconds": 1.5, "peak_rss_mb": 100, "reused": False,
              "metrics": {"rows": 3, "ok": True, "scheme": "combined", "dislike_reasons": {"my name is Ann": 2},
                          "inputs": {"/home/ann/log.jsonl": 1}, "user": {"auc": 0.9}, "reasons": ["rude"]}}
    tracker.log_stage(2, "ingest", marker, tmp_path)
    assert {(axis, step, key) for axis, step, key, _ in backend.points} == {
        ("pipeline/stage", 2, k) for k in ("ingest/metrics/rows", "ingest/metrics/user/auc", "ingest/seconds",
                                           "ingest/peak_rss_mb", "ingest/reused")}
    tracker.close()
    assert backend.closed is False and tracker.backends == []


def test_a_stage_resumed_from_a_training_checkpoint_replays_the_restored_steps(tmp_path):
    from rlhf_organic.checkpoint import checkpointing
    from rlhf_organic.training import Objective, fit

    plan = [np.array([i]) for i in range(5)]
    settings = SimpleNamespace(lr=0.1, weight_decay=0.0, warmup_ratio=0.0, grad_clip=1.0)

    def attempt(folder: str, die_at: int | None = None):
        p = torch.nn.Parameter(torch.ones(3))
        calls = []

        def step_loss(step):
            calls.append(1)
            if len(calls) == die_at:
                raise KeyboardInterrupt  # killed in the middle of the stage
            return ((p - 3.0) ** 2).sum(), {"part": 1.0}

        backend = _Backend()
        with tracking.live(tracking.Tracker([backend]), "s"), checkpointing(tmp_path / folder, every_steps=2):
            try:
                fit([p], plan, Objective(lambda items: {}, lambda items, totals: step_loss(items)), settings)
            except KeyboardInterrupt:
                pass
        return [(step, value) for axis, step, key, value in backend.points if key == "s/train/loss"]

    whole = attempt("uninterrupted")
    killed = attempt("killed", die_at=4)  # steps 1-3 done, a checkpoint after step 2
    resumed = attempt("killed")  # restores step 2, logs steps 1-2 from the checkpoint's history, then 3-5
    assert [s for s, _ in killed] == [1, 2, 3]
    assert [s for s, _ in resumed] == [1, 2, 3, 4, 5]
    assert [v for _, v in resumed] == pytest.approx([v for _, v in whole])
    assert not any(math.isnan(v) for _, v in resumed)
