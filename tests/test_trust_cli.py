"""The trust stage through the command line and the recipe: files, printed table, clear errors."""

import json

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from rlhf_organic.cli import main
from rlhf_organic.errors import RecipeError
from rlhf_organic.recipe import load_recipe
from rlhf_organic.trust.config import settings_from_cli


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A tiny simulated dataset and its ground truth, built with the CLI."""
    root = tmp_path_factory.mktemp("trust_cli")
    runner = CliRunner()
    assert runner.invoke(main, ["simulate", "--preset", "tiny", "--users", "30", "--out", str(root / "sim"), "-q"]).exit_code == 0
    assert runner.invoke(main, ["ingest", str(root / "sim" / "logs"), "--out", str(root / "ds"), "-q"]).exit_code == 0
    return root


def test_trust_command_writes_the_folder_and_prints_the_table(simulated):
    out = simulated / "trust"
    res = CliRunner().invoke(main, [
        "trust", str(simulated / "ds"), "--scheme", "per_user", "--set", "threshold=0.4", "--set", "reference.folds=3",
        "--set", "select_on_gold=false",
        "--out", str(out), "--ground-truth", str(simulated / "sim"), "-q",
    ])
    assert res.exit_code == 0, res.output
    assert "user: troll AUC" in res.stdout and "helper weight kept" in res.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["threshold"] == 0.4 and metrics["reference"]["folds"] == 3
    assert 0 <= metrics["user"]["auc"] <= 1 and "example" in metrics
    users = pq.read_table(out / "users.parquet")
    assert users.num_rows == 30 and {"user_id", "trust", "n_feedback", "disagreement_rate"} <= set(users.column_names)
    assert (out / "trust.png").stat().st_size > 0 and (out / "examples.parquet").is_file()
    again = CliRunner().invoke(main, ["trust", str(simulated / "ds"), "--out", str(out), "-q"])
    assert again.exit_code == 2 and "--overwrite" in again.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scheme", "per_usr"], "did you mean 'per_user'?"),
        (["--scheme", "per_user", "--set", "thresold=0.4"], "did you mean 'threshold'?"),
        (["--scheme", "per_user", "--set", "threshold=2"], "per_user.threshold: Input should be less than or equal to 1"),
        (["--set", "flag_ok=0.5"], "flag_bad (0.2) must be above flag_ok (0.5)"),
    ],
)
def test_bad_trust_settings_are_clear_errors(simulated, args, message):
    res = CliRunner().invoke(main, ["trust", str(simulated / "ds"), "--out", str(simulated / "never"), *args])
    assert res.exit_code == 2 and message in res.stderr
    assert not (simulated / "never").exists()


def test_not_a_dataset_is_a_clear_error(tmp_path):
    (tmp_path / "notes").mkdir()  # the output beside it: one inside its input is refused before this check
    res = CliRunner().invoke(main, ["trust", str(tmp_path / "notes"), "--out", str(tmp_path / "t")])
    assert res.exit_code == 2 and "examples.parquet is missing" in res.stderr


def test_list_schemes_shows_every_scheme_and_setting():
    res = CliRunner().invoke(main, ["trust", "--list-schemes"])
    assert res.exit_code == 0
    for name in ("uniform", "safety_filter", "per_example", "per_user", "per_user_example", "soft_purr",
                 "bayesian", "crowd", "combined", "user_threshold", "flag_ok", "folds"):
        assert name in res.stdout


def test_cli_keys_resolve_against_the_chosen_scheme():
    settings = settings_from_cli("soft_purr", ["alpha=0.25", "reference.C=1"])
    assert settings.scheme_config().alpha == 0.25 and settings.reference.C == 1
    assert settings.per_user.threshold == 0.5  # other schemes keep their defaults


def test_recipe_trust_section_is_validated(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "t", "trust": {"scheme": "bayesian", "bayesian": {"output": "reliable"}}}))
    assert load_recipe(recipe).trust.scheme_config().output == "reliable"
    with pytest.raises(RecipeError, match=r"r.yaml:2: trust.bayesian.output"):
        recipe.write_text("trust:\n  bayesian: {output: median}\nname: t\n")
        load_recipe(recipe)
    with pytest.raises(RecipeError, match="command line: trust.combined.refit"):
        load_recipe(_write(tmp_path / "ok.yaml", "name: t\n"), ["trust.combined.refit=maybe"])


def _write(path, text):
    path.write_text(text)
    return path


def test_run_recipe_adds_the_trust_stage(tmp_path):
    recipe = _write(tmp_path / "r.yaml", f"name: t\ndata: {{simulate: {{preset: tiny, users: 20}}}}\n"
                    f"trust: {{scheme: per_user_example}}\noutput: {{dir: '{tmp_path}/runs/{{name}}'}}\n")
    res = CliRunner().invoke(main, ["run", str(recipe), "-q"])
    assert res.exit_code == 0, res.output
    run = tmp_path / "runs" / "t"
    metrics = json.loads((run / "trust" / "metrics.json").read_text())
    assert metrics["scheme"] == "per_user_example" and "user" in metrics  # simulated: evaluated against its truth
    assert "Trust" in (run / "report.txt").read_text()
    assert yaml.safe_load((run / "recipe.yaml").read_text())["trust"]["scheme"] == "per_user_example"
