"""``rlhf-organic ablate``: grid parsing, cells as run folders sharing stages, the comparison report."""

import csv
import json

import pytest
from click.testing import CliRunner

from rlhf_organic.ablate import parse_grid
from rlhf_organic.cli import main
from rlhf_organic.errors import RecipeError


def test_parse_grid_types_values_and_keeps_lists_whole():
    grid = parse_grid(["trust.scheme=uniform,combined", "reward.weighted=true,false",
                       "policy.lora.target_modules=[q_proj,v_proj],all-linear"])
    assert grid == {"trust.scheme": ["uniform", "combined"], "reward.weighted": [True, False],
                    "policy.lora.target_modules": [["q_proj", "v_proj"], "all-linear"]}
    for bad in ("trust.scheme", "=a,b", "trust.scheme=", "trust.scheme=a,a"):
        with pytest.raises(RecipeError):
            parse_grid([bad])


def _recipe(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(f"name: a\ndata: {{simulate: {{preset: tiny, users: 20}}}}\n"
                    f"output: {{dir: '{tmp_path}/runs/{{name}}', report_to: none}}\n"
                    "ablate: {grid: {trust.scheme: [uniform, per_user_example]}, seeds: 2}\n")
    return path


def test_ablate_runs_the_grid_shares_stages_and_reports(tmp_path):
    res = CliRunner().invoke(main, ["ablate", str(_recipe(tmp_path)), "-q", "--grid", "trust.scheme=uniform,combined"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "runs" / "a"
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["cell"], r["seed"]) for r in rows] == [
        ("trust.scheme=uniform", "0"), ("trust.scheme=uniform", "1"), ("trust.scheme=combined", "0"), ("trust.scheme=combined", "1")]
    auc = {r["cell"]: float(r["troll AUC (users)"]) for r in rows}
    assert auc["trust.scheme=uniform"] == 0.5 and auc["trust.scheme=combined"] > 0.8
    combined = out / "cells" / "trust.scheme=combined" / "seed1"
    assert (combined / "dataset").is_symlink() and not (combined / "trust").is_symlink()  # same seed, same data: shared
    md = (out / "report.md").read_text()
    assert "## Troll detection (trust vs ground truth)" in md and "| trust.scheme=combined | **1.000" in md
    assert (out / "report" / "troll_auc.png").is_file() and "data:image/png" in (out / "report.html").read_text()
    assert json.loads((out / "results.json").read_text())[0]["cell"] == "trust.scheme=uniform"
    assert "troll AUC (users)" in res.stdout

    again = CliRunner().invoke(main, ["ablate", str(_recipe(tmp_path)), "-q", "--grid", "trust.scheme=uniform,combined"])
    assert again.exit_code == 2 and "--resume" in again.stderr
    resumed = CliRunner().invoke(main, ["ablate", str(_recipe(tmp_path)), "--resume", "--grid", "trust.scheme=uniform,combined"])
    assert resumed.exit_code == 0 and resumed.stderr.count("reused") >= 12  # 4 runs x 3 stages, nothing recomputed


def test_a_bad_grid_value_fails_before_any_run(tmp_path):
    res = CliRunner().invoke(main, ["ablate", str(_recipe(tmp_path)), "-q", "--grid", "trust.scheme=uniform,combind"])
    assert res.exit_code == 2 and "did you mean 'combined'" in res.stderr
    assert not (tmp_path / "runs").exists()
    res = CliRunner().invoke(main, ["ablate", str(_recipe(tmp_path)), "-q", "--grid", "trust.shceme=a,b"])
    assert res.exit_code == 2 and "unknown key 'shceme'" in res.stderr
