"""The command line: fast start, clear errors with exit status 2, and each command end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from rlhf_organic.cli import main

from conftest import bb3x_conversation, unreadable, write_lines

ROOT = Path(__file__).parent.parent
HEAVY = ("torch", "trl", "bitsandbytes", "transformers", "peft", "accelerate")


@pytest.mark.parametrize("argv", [["--help"], ["ingest", "--help"], ["validate", "recipes/quickstart.yaml"],
                                  ["policy", "train", "--help"], ["policy", "methods"], ["schema"]])
def test_cli_does_not_import_heavy_libraries(argv):
    code = (
        "import sys\nfrom rlhf_organic.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        f"print('LOADED=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "LOADED="


def test_validate_prints_resolved_recipe_and_rejects_bad_ones(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", str(ROOT / "recipes/quickstart.yaml"), "data.simulate.users=9"])
    assert ok.exit_code == 0, ok.output
    resolved = yaml.safe_load(ok.stdout)
    assert resolved["data"]["simulate"]["users"] == 9 and resolved["data"]["simulate"]["preset"] == "realistic"
    bad = runner.invoke(main, ["validate", str(ROOT / "recipes/quickstart.yaml"), "data.simulate.userz=9"])
    assert bad.exit_code == 2
    assert "unknown key 'userz' (did you mean 'users'?)" in bad.stderr


def test_ingest_strict_exits_2_naming_file_and_line(tmp_path):
    src = write_lines(tmp_path / "x.jsonl", [bb3x_conversation(), "{broken"])
    res = CliRunner().invoke(main, ["ingest", str(src), "--out", str(tmp_path / "ds"), "--strict"])
    assert res.exit_code == 2
    assert "x.jsonl:2: not valid JSON" in res.stderr
    res = CliRunner().invoke(main, ["ingest", str(src), "--out", str(tmp_path / "ds")])
    assert res.exit_code == 0 and "rejected 1" in res.stderr


def test_simulate_ingest_inspect(tmp_path):
    runner = CliRunner()
    sim = runner.invoke(main, ["simulate", "--preset", "gaslight_troll_50", "--users", "20", "--seed", "3",
                               "--out", str(tmp_path / "sim"), "--set", "feedback_rate=0.5", "-q"])
    assert sim.exit_code == 0, sim.output
    assert "gaslight_troll 10" in sim.stderr
    config = json.loads((tmp_path / "sim" / "simulation.json").read_text())["config"]
    assert (config["users"], config["seed"], config["feedback_rate"]) == (20, 3, 0.5)
    ing = runner.invoke(main, ["ingest", str(tmp_path / "sim" / "logs"), "--out", str(tmp_path / "ds"), "-q"])
    assert ing.exit_code == 0 and "format bb3x (auto-detected)" in ing.stderr
    ins = runner.invoke(main, ["inspect", str(tmp_path / "ds")])
    assert ins.exit_code == 0
    for heading in ("counts", "feedback", "dislike reasons", "users by amount of feedback", "safety"):
        assert f"\n{heading}" in ins.stdout
    as_json = json.loads(runner.invoke(main, ["inspect", str(tmp_path / "ds"), "--json"]).stdout)
    assert as_json["counts"]["users"] == 20 and sum(as_json["users_by_feedback"].values()) == 20


def test_simulate_bad_setting_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(main, ["simulate", "--out", str(tmp_path / "s"), "--set", "feedbak_rate=0.5"])
    assert res.exit_code == 2 and "did you mean 'feedback_rate'?" in res.stderr
    res = CliRunner().invoke(main, ["simulate", "--list-presets"])
    assert res.exit_code == 0 and "realistic" in res.stdout and "corruption_rate" in res.stdout


def test_run_recipe_writes_a_run_folder(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: t\ndata: {{simulate: {{preset: tiny, users: 15}}}}\noutput: {{dir: '{tmp_path}/runs/{{name}}'}}\n")
    res = CliRunner().invoke(main, ["run", str(recipe), "-q"])
    assert res.exit_code == 0, res.output
    run = tmp_path / "runs" / "t"
    assert (run / "recipe.yaml").is_file() and (run / "report.txt").is_file()
    assert json.loads((run / "dataset" / "summary.json").read_text())["users"] == 15
    again = CliRunner().invoke(main, ["run", str(recipe), "-q"])
    assert again.exit_code == 2 and "output.overwrite=true" in again.stderr
    assert CliRunner().invoke(main, ["run", str(recipe), "-q", "output.overwrite=true"]).exit_code == 0


def test_quickstart_recipe_runs(tmp_path):
    res = CliRunner().invoke(
        main, ["run", str(ROOT / "recipes/quickstart_tiny.yaml"), "-q", f"output.dir={tmp_path}/qs", "data.simulate.users=60",
               "policy.tiny.imitation_max=300", "policy.train.max_items=16", "policy.eval.contexts=8"]
    )
    assert res.exit_code == 0, res.output
    assert "conversations with unsafe user turns" in res.stdout
    assert "clean judge p(good)" in res.stdout and (tmp_path / "qs" / "policy" / "adapter").is_dir()


# ---------------------------------------------------------------- hostile paths (issue 18)

def test_overwrite_never_deletes_the_current_folder_or_the_recipe(tmp_path, monkeypatch):
    """``run r.yaml output.dir=. output.overwrite=true`` deleted every file of the current folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: t\ndata: {simulate: {preset: tiny, users: 15}}\n")
    res = CliRunner().invoke(main, ["run", "r.yaml", "-q", "output.dir=.", "output.overwrite=true"])
    assert res.exit_code == 2, res.output
    assert "recipe" in res.stderr and "r.yaml" in res.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine" and recipe.is_file()
    # the recipe elsewhere: the folder is still not one rlhf-organic wrote, so it is not replaced
    other = tmp_path.parent / f"{tmp_path.name}-recipe.yaml"
    other.write_text(recipe.read_text())
    res = CliRunner().invoke(main, ["run", str(other), "-q", "output.dir=.", "output.overwrite=true"])
    assert res.exit_code == 2 and "not written by rlhf-organic" in res.stderr
    res = CliRunner().invoke(main, ["run", str(other), "-q", "output.dir=.", "--resume"])
    assert res.exit_code == 2 and "not written by rlhf-organic" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "r.yaml"]


def test_ingest_never_replaces_its_own_input(tmp_path):
    """``ingest mydata --out mydata --overwrite`` replaced the raw logs with the dataset."""
    logs = write_lines(tmp_path / "mydata" / "a.jsonl", [bb3x_conversation()]).parent
    for out in (logs, logs / "ds", tmp_path):
        res = CliRunner().invoke(main, ["ingest", str(logs), "--out", str(out), "--overwrite"])
        assert res.exit_code == 2, (out, res.output)
        assert "input" in res.stderr and str(logs) in res.stderr
    assert sorted(p.name for p in logs.iterdir()) == ["a.jsonl"]


def test_ingest_with_an_empty_and_an_unreadable_file_ingests_the_rest(tmp_path):
    """An empty file stopped the ingest (exit 2, "no valid JSON object"); an unreadable one was a traceback."""
    logs = tmp_path / "logs"
    write_lines(logs / "a.jsonl", [bb3x_conversation()])
    (logs / "b_empty.jsonl").write_bytes(b"")
    secret = write_lines(logs / "c_secret.jsonl", [bb3x_conversation("c2")])
    with unreadable(secret):
        res = CliRunner().invoke(main, ["ingest", str(logs), "--out", str(tmp_path / "ds")])
        assert res.exit_code == 0, res.output
        assert "b_empty.jsonl: empty" in res.stderr and "c_secret.jsonl" in res.stderr
        assert "1 could not be read" in res.stderr.splitlines()[-1]
        res = CliRunner().invoke(main, ["ingest", str(secret), "--out", str(tmp_path / "ds2")])
    assert res.exit_code == 2 and "nothing could be read" in res.stderr and "c_secret.jsonl" in res.stderr
    assert "Traceback" not in res.output
