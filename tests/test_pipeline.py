"""``rlhf-organic run``: stage folders with completion markers, fingerprints, --resume, reuse across runs,
the report (Markdown + HTML) and experiment tracking."""

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from rlhf_organic.cli import main
from rlhf_organic.errors import UserError
from rlhf_organic.pipeline import MARKER, run_recipe
from rlhf_organic.recipe import load_recipe
from rlhf_organic.reporting.doc import Doc


def _recipe(tmp_path: Path, *extra: str, name: str = "t", reward: bool = True) -> Path:
    path = tmp_path / f"{name}.yaml"
    text = (f"name: {name}\ndata: {{simulate: {{preset: tiny, users: 20}}}}\ntrust: {{scheme: combined}}\n"
            f"output: {{dir: '{tmp_path}/runs/{{name}}', report_to: none}}\n")
    if reward:
        text += "reward: {spec: tiny, override: {train: {epochs: 0.5}}}\n"
    path.write_text(text + "".join(line + "\n" for line in extra))
    return path


def _run(path: Path, *args: str):
    return CliRunner().invoke(main, ["run", str(path), "-q", *args])


def _markers(run: Path) -> dict:
    return {d.name: json.loads((d / MARKER).read_text()) for d in run.iterdir() if (d / MARKER).is_file()}


def test_run_writes_stage_folders_markers_and_reports(tmp_path):
    res = _run(_recipe(tmp_path))
    assert res.exit_code == 0, res.output
    run = tmp_path / "runs" / "t"
    markers = _markers(run)
    assert set(markers) == {"simulation", "dataset", "trust", "reward"}
    for marker in markers.values():
        assert len(marker["fingerprint"]) == 16 and marker["seconds"] >= 0 and marker["peak_rss_mb"] > 0
    assert markers["reward"]["metrics"]["eval"]["pointwise"]["n"] > 0
    md = (run / "report.md").read_text()
    for heading in ("## Pipeline", "## Data", "## Trust", "## Reward model", "## Recipe"):
        assert heading in md
    assert "![trust distribution](trust/trust.png)" in md and (run / "report" / "reward_loss.png").is_file()
    html = (run / "report.html").read_text()
    assert "<table>" in html and "data:image/png;base64," in html and "src='trust/" not in html  # self-contained
    assert "Stages: simulate" in (run / "report.txt").read_text()


def test_resume_reuses_completed_stages_and_recomputes_changed_ones(tmp_path):
    path = _recipe(tmp_path)
    assert _run(path).exit_code == 0
    run = tmp_path / "runs" / "t"
    first = _markers(run)
    again = _run(path)
    assert again.exit_code == 2 and "--resume" in again.stderr  # an existing run folder is never silently reused

    assert _run(path, "--resume").exit_code == 0
    assert _markers(run) == first  # nothing recomputed: markers (fingerprints, completion times) unchanged
    assert "(reused)" in (run / "report.txt").read_text()

    # a changed trust setting recomputes trust and everything after it, and nothing before it
    assert _run(path, "--resume", "trust.scheme=per_user_example").exit_code == 0
    changed = _markers(run)
    assert changed["simulation"] == first["simulation"] and changed["dataset"] == first["dataset"]
    assert changed["trust"]["fingerprint"] != first["trust"]["fingerprint"]
    assert changed["reward"]["fingerprint"] != first["reward"]["fingerprint"]
    assert changed["trust"]["metrics"]["scheme"] == "per_user_example"


def test_a_stage_without_its_marker_is_recomputed(tmp_path):
    path = _recipe(tmp_path, reward=False)
    assert _run(path).exit_code == 0
    run = tmp_path / "runs" / "t"
    first = _markers(run)
    (run / "trust" / MARKER).unlink()  # as if killed after the folder was renamed, before the marker
    (run / "trust" / "users.parquet").write_bytes(b"half-written")
    assert _run(path, "--resume").exit_code == 0
    now = _markers(run)
    assert now["dataset"] == first["dataset"]
    assert now["trust"]["completed"] >= first["trust"]["completed"] and now["trust"]["reused"] is False
    import pyarrow.parquet as pq

    assert pq.read_table(run / "trust" / "users.parquet").num_rows == 20


def test_reuse_from_a_sibling_run_links_and_never_deletes_the_donor(tmp_path):
    donor_recipe = load_recipe(_recipe(tmp_path, reward=False, name="a"))
    run_recipe(donor_recipe, progress=False, log=lambda m: None, echo=lambda m: None)
    donor = tmp_path / "runs" / "a"
    other = load_recipe(_recipe(tmp_path, reward=False, name="b"), ["trust.scheme=per_user_example"])
    markers = run_recipe(other, reuse_from=(donor,), progress=False, log=lambda m: None, echo=lambda m: None)
    run = tmp_path / "runs" / "b"
    assert markers["ingest"]["reused"] and markers["simulate"]["reused"] and not markers["trust"]["reused"]
    assert (run / "dataset").is_symlink() and not (run / "trust").is_symlink()
    assert (run / "dataset" / "examples.parquet").is_file()
    # recomputing a linked stage replaces the link, leaving the donor's folder alone
    changed = load_recipe(_recipe(tmp_path, reward=False, name="b"), ["data.max_context=3", "output.overwrite=true"])
    run_recipe(changed, reuse_from=(donor,), progress=False, log=lambda m: None, echo=lambda m: None)
    assert not (run / "dataset").is_symlink() and (donor / "dataset" / MARKER).is_file()


def test_files_source_fingerprint_follows_the_input_files(tmp_path):
    from rlhf_organic.simulator.simulate import preset_config, simulate

    simulate(preset_config("tiny", users=12), tmp_path / "sim", progress=False)
    path = tmp_path / "f.yaml"
    path.write_text(f"name: f\ndata: {{source: files, inputs: ['{tmp_path}/sim/logs']}}\n"
                    f"trust: {{scheme: per_user_example, ground_truth: '{tmp_path}/sim'}}\n"
                    f"output: {{dir: '{tmp_path}/runs/f', report_to: none}}\n")
    assert _run(path).exit_code == 0
    first = _markers(tmp_path / "runs" / "f")
    log = next((tmp_path / "sim" / "logs").glob("release_data_*.jsonl"))
    os.utime(log, ns=(1, 1))  # the same file, touched: its signature changes, so ingest is redone
    assert _run(path, "--resume").exit_code == 0
    assert _markers(tmp_path / "runs" / "f")["dataset"]["fingerprint"] != first["dataset"]["fingerprint"]


def test_tensorboard_tracking_and_missing_tracker(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    path = _recipe(tmp_path, reward=False)
    assert _run(path, "output.report_to=[tensorboard]").exit_code == 0
    assert list((tmp_path / "runs" / "t" / "tensorboard").glob("events.out.tfevents.*"))
    import importlib.util

    find_spec = importlib.util.find_spec  # as if wandb were not installed
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    res = _run(path, "output.report_to=[wandb]", "output.dir=" + str(tmp_path / "w"))
    assert res.exit_code == 2 and "pip install wandb" in res.stderr
    assert not (tmp_path / "w").exists()  # refused before any work


def test_quiet_and_verbose(tmp_path):
    path = _recipe(tmp_path, reward=False)
    res = CliRunner().invoke(main, ["run", str(path), "-v"])
    assert res.exit_code == 0 and "fingerprint" in res.stderr
    res = CliRunner().invoke(main, ["run", str(path), "-q", "--resume"])
    assert res.exit_code == 0 and res.stderr == "" and "Trust" in res.stdout
    assert CliRunner().invoke(main, ["run", str(path), "-q", "-v"]).exit_code == 2


def test_report_html_escapes_text_from_the_data(tmp_path):
    doc = Doc("r")
    doc.text("a `x<y>` and **bold**")
    doc.table(["user said", "n"], [["<script>alert(1)</script>", 3]])
    html = doc.to_html()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<code>x&lt;y&gt;</code>" in html and "<strong>bold</strong>" in html and "class='num'>3<" in html
    md = doc.to_markdown(tmp_path)
    assert "| <script>alert(1)</script> | 3 |" in md and "|---|---:|" in md


def test_missing_input_files_are_a_clear_error(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text(f"name: f\ndata: {{source: files, inputs: ['{tmp_path}/nowhere/*.jsonl']}}\n"
                    f"output: {{dir: '{tmp_path}/runs/f', report_to: none}}\n")
    with pytest.raises(UserError, match="data.inputs"):
        run_recipe(load_recipe(path), progress=False, log=lambda m: None, echo=lambda m: None)


def test_training_steps_are_logged_live_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = _recipe(tmp_path)
    assert _run(path, "output.report_to=[tensorboard]").exit_code == 0
    events = EventAccumulator(str(tmp_path / "runs" / "t" / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    steps = json.loads((tmp_path / "runs" / "t" / "reward" / "history.json").read_text())
    assert len(events.Scalars("reward/train/loss")) == len(steps)
    assert events.Scalars("reward/train/loss")[-1].value == pytest.approx(steps[-1]["loss"])
    assert "trust/metrics/user/auc" in tags and "reward/seconds" in tags


def test_trl_preferences_without_user_ids_run_end_to_end_under_uniform_trust(tmp_path):
    """A user's own TRL preference file (no thumbs, no user ids): ``uniform`` trust weights every choice 1,
    the reward model and DPO train on the choices, the evaluation takes held-out choices' prompts."""
    rows = [{"prompt": f"question {i}", "chosen": "Sure, happy to help.", "rejected": "Go away."} for i in range(40)]
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from test_recipes import TINY

    overrides = [o for o in TINY if not o.startswith("data.")] + [
        "data.source=files", f"data.inputs=[{tmp_path / 'prefs.jsonl'}]", "policy.method=dpo",
        "policy.dpo.pairs=[preferences]", f"output.dir={tmp_path}/run"]
    path = Path(__file__).parent.parent / "recipes" / "dpo.yaml"
    refused = _run(path, *overrides)  # the recipe's combined scheme judges users: it says what to do instead
    assert refused.exit_code == 2 and "trust.scheme: uniform" in refused.stderr
    res = _run(path, *overrides, "trust.scheme=uniform", "output.overwrite=true")
    assert res.exit_code == 0, res.output
    markers = _markers(tmp_path / "run")
    assert markers["trust"]["metrics"]["examples"] == 0
    assert markers["reward"]["metrics"]["train"]["pairs"] > 0
    assert markers["policy"]["metrics"]["eval"]["contexts"] > 0
    assert "every label weighted 1" in (tmp_path / "run" / "report.md").read_text()
