"""Recipe loading: every problem found before any work, named by file, line and key path."""

import re
from pathlib import Path

import pytest

from rlhf_organic.errors import RecipeError
from rlhf_organic.recipe import Recipe, dump_recipe, load_recipe

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path):
    assert isinstance(load_recipe(path), Recipe)


def test_unknown_key_lists_valid_keys_and_suggests_nearest(tmp_path):
    path = _write(tmp_path, "name: x\ndata:\n  source: simulate\n  formt: bb3x\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert f"{path}:4: data.formt: unknown key 'formt' (did you mean 'format'?)" in msg
    assert "valid keys: chunk_mb, engine, format, inputs, max_context, privacy, ray_address, simulate, source, strict" in msg


def test_unknown_section(tmp_path):
    with pytest.raises(RecipeError, match=r"outptu: unknown key 'outptu' \(did you mean 'output'\?\); "
                       r"valid keys: ablate, data, name, output, policy, reward, seed, trust"):
        load_recipe(_write(tmp_path, "name: x\noutptu: {dir: y}\n"))


def test_wrong_type_and_out_of_range_name_the_key_path_and_line(tmp_path):
    path = _write(tmp_path, "name: x\ndata:\n  chunk_mb: lots\n  simulate:\n    users: 0\n    feedback_rate: 2\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert f"{path}:3: data.chunk_mb: Input should be a valid integer" in msg
    assert f"{path}:5: data.simulate.users: Input should be greater than or equal to 1 (got 0)" in msg
    assert f"{path}:6: data.simulate.feedback_rate: Input should be less than or equal to 1 (got 2)" in msg


def test_bad_choice_suggests_nearest(tmp_path):
    with pytest.raises(RecipeError, match=r"data\.simulate\.preset: .*'realistic'.*\(got 'realistc'\) \(did you mean 'realistic'\?\)"):
        load_recipe(_write(tmp_path, "name: x\ndata: {simulate: {preset: realistc}}\n"))


def test_cross_field_checks(tmp_path):
    with pytest.raises(RecipeError, match="shares must sum to 1"):
        load_recipe(_write(tmp_path, "name: x\ndata: {simulate: {mix: {helper: 0.5, troll: 0.2}}}\n"))
    with pytest.raises(RecipeError, match="source is 'files' but inputs is empty"):
        load_recipe(_write(tmp_path, "name: x\ndata: {source: files}\n"))
    with pytest.raises(RecipeError, match="name: String should match pattern"):
        load_recipe(_write(tmp_path, "name: ../escape\n"))
    with pytest.raises(RecipeError, match="name: Field required"):
        load_recipe(_write(tmp_path, "data: {}\n"))


def test_overrides_are_applied_and_validated_the_same_way(tmp_path):
    path = _write(tmp_path, "name: x\ndata:\n  simulate: {preset: tiny}\n")
    recipe = load_recipe(path, ["data.simulate.users=12", "data.simulate.preset=helpers_only", "seed=5"])
    cfg = recipe.data.simulate.config(recipe.seed)
    assert (cfg.users, cfg.mix, cfg.seed) == (12, {"helper": 1.0}, 5)
    with pytest.raises(RecipeError, match=r"command line: data\.simulate\.users=-1: data\.simulate\.users: Input should be greater"):
        load_recipe(path, ["data.simulate.users=-1"])
    with pytest.raises(RecipeError, match=r"data\.simulat: unknown key 'simulat' \(did you mean 'simulate'\?\)"):
        load_recipe(path, ["data.simulat.users=3"])
    with pytest.raises(RecipeError, match="is not key=value"):
        load_recipe(path, ["data.simulate.users"])
    with pytest.raises(RecipeError, match="name is not a section"):
        load_recipe(path, ["name.x=1"])


def test_yaml_errors_and_non_mapping(tmp_path):
    with pytest.raises(RecipeError, match=r"r\.yaml:\d+: not valid YAML"):
        load_recipe(_write(tmp_path, "name: x\ndata:\n  - [unclosed\n"))
    with pytest.raises(RecipeError, match="a recipe is a mapping of sections"):
        load_recipe(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(RecipeError, match="recipe not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_resolved_recipe_round_trips(tmp_path):
    recipe = load_recipe(_write(tmp_path, "name: x\nseed: 3\n"))
    text = dump_recipe(recipe)
    assert "preset: tiny" in text and "users: 40" in text and "seed: 3" in text
    again = load_recipe(_write(tmp_path, text))
    assert again.data.simulate.config(again.seed) == recipe.data.simulate.config(recipe.seed)


# ---- non-finite numbers -------------------------------------------------------------------------

def _float_paths(model, prefix=()):
    """Every settings path under ``model`` whose field takes a float (through Optional, unions, dicts)."""
    from typing import get_args

    from pydantic import BaseModel

    def types(annotation):
        args = get_args(annotation)
        return [t for a in args for t in types(a)] if args else [annotation]

    paths = []
    for name, field in model.model_fields.items():
        found = types(field.annotation)
        if float in found:
            paths.append(prefix + (name,))
        for sub in found:
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                paths += _float_paths(sub, prefix + (name,))
    return paths


def test_every_float_setting_refuses_infinity_and_nan(tmp_path):
    """``train.epochs=.inf`` used to pass validation and end in an OverflowError traceback; every float
    field of a recipe, a reward spec and the simulator refuses inf and NaN with the key path."""
    from rlhf_organic.reward.spec import RewardSpec
    from rlhf_organic.settings import apply_overrides, validate_settings

    models = {Recipe: {"name": "x", "policy": {}}, RewardSpec: {}}
    checked = 0
    for model, base in models.items():
        for path in _float_paths(model):
            if path[-1] in ("mix",):  # a mapping of shares: its values are floats, checked below
                continue
            for bad in (float("inf"), float("nan")):
                with pytest.raises(RecipeError, match=rf"{re.escape('.'.join(path))}: Input should be a finite number"):
                    validate_settings(model, apply_overrides(base, [(path, bad)]), "test")
                checked += 1
    assert checked > 60  # the walk found the settings (recipe, policy, trust schemes, spec, simulator)
    with pytest.raises(RecipeError, match="finite number"):
        validate_settings(Recipe, {"name": "x", "data": {"simulate": {"mix": {"helper": float("nan")}}}}, "test")


@pytest.mark.parametrize("override", ["policy.train.epochs=.inf", "policy.kto.beta=.nan", "reward.override.train.lr=.inf",
                                      "data.simulate.labels_per_user_mean=.inf", "output.checkpoint_minutes=.inf"])
def test_non_finite_overrides_are_refused_at_load(tmp_path, override):
    path = _write(tmp_path, "name: x\npolicy: {method: kto}\nreward: {spec: tiny}\n")
    key = override.split("=")[0].removeprefix("reward.override.")
    with pytest.raises(RecipeError, match=rf"{re.escape(key)}: Input should be a finite number"):
        load_recipe(path, [override])


@pytest.mark.parametrize("command", [["reward", "train"], ["policy", "train"]])
def test_non_finite_command_line_settings_exit_2_without_a_traceback(tmp_path, command):
    from click.testing import CliRunner

    from rlhf_organic.cli import main

    (tmp_path / "ds").mkdir()
    res = CliRunner().invoke(main, [*command, str(tmp_path / "ds"), "--set", "train.epochs=.inf", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert "train.epochs: Input should be a finite number" in res.stderr and "Traceback" not in res.output


def test_a_nan_fraction_on_the_command_line_is_refused(tmp_path):
    """click's FloatRange lets NaN through (every comparison with NaN is false)."""
    from click.testing import CliRunner

    from rlhf_organic.cli import main

    (tmp_path / "ds").mkdir()
    res = CliRunner().invoke(main, ["policy", "judge", str(tmp_path / "ds"), "--ground-truth", str(tmp_path),
                                    "--eval-fraction", "nan", "--out", str(tmp_path / "j")])
    assert res.exit_code == 2 and "not a finite number" in res.output, res.output


# ---- where a problem was written ----------------------------------------------------------------

def test_a_command_line_problem_is_blamed_on_the_command_line_as_typed(tmp_path):
    path = _write(tmp_path, "name: x\nseed: oops\ndata:\n  simulate: {preset: tiny}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["outptu.dir=elsewhere", "data.simulate.users=-1", "data.simulat.users=3"])
    lines = str(err.value).splitlines()
    assert lines[0] == f"{path}: invalid settings"
    assert f"  {path}:2: seed: Input should be a valid integer, unable to parse string as an integer (got 'oops')" in lines
    assert ("  command line: outptu.dir=elsewhere: outptu: unknown key 'outptu' (did you mean 'output'?); valid keys: "
            "ablate, data, name, output, policy, reward, seed, trust") in lines
    assert "  command line: data.simulate.users=-1: data.simulate.users: Input should be greater than or equal to 1 (got -1)" in lines
    assert any(line.startswith("  command line: data.simulat.users=3: data.simulat: unknown key 'simulat'") for line in lines)
    assert len(lines) == 5


@pytest.mark.parametrize("command", [["reward", "train"], ["policy", "train"], ["trust"]])
def test_command_line_settings_of_the_stage_commands_are_blamed_on_the_command_line(tmp_path, command):
    from click.testing import CliRunner

    from rlhf_organic.cli import main

    (tmp_path / "ds").mkdir()
    res = CliRunner().invoke(main, [*command, str(tmp_path / "ds"), "--set", "trian.epochs=2", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert "command line: trian.epochs=2: " in res.stderr and "unknown key" in res.stderr


def test_a_bad_reward_override_is_blamed_where_it_was_written_with_the_recipes_other_problems(tmp_path):
    """It used to be blamed on reward_models/tiny.yaml (or 'command line') and to hide every other problem."""
    path = _write(tmp_path, "name: x\nseed: oops\nreward:\n  spec: tiny\n  override:\n    train: {epochz: 3}\n"
                            "    lora: {r: 0}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["reward.override.max_length=2", "reward.override.heed.pooling=last"])
    msg = str(err.value)
    lines = msg.splitlines()
    assert lines[0] == f"{path}: invalid settings" and "tiny.yaml" not in msg
    assert any(line.startswith(f"  {path}:2: seed: ") for line in lines)
    assert any(line.startswith(f"  {path}:6: reward.override.train.epochz: unknown key 'epochz' (did you mean 'epochs'?)")
               for line in lines)
    assert f"  {path}:7: reward.override.lora.r: Input should be greater than or equal to 1 (got 0)" in lines
    assert ("  command line: reward.override.max_length=2: reward.override.max_length: Input should be greater than or "
            "equal to 8 (got 2)") in lines
    assert any(line.startswith("  command line: reward.override.heed.pooling=last: reward.override.heed: unknown key 'heed'")
               for line in lines)
    assert len(lines) == 6


def test_a_missing_spec_is_blamed_on_its_line_with_the_other_problems(tmp_path):
    path = _write(tmp_path, "name: x\nseed: oops\nreward:\n  spec: nope\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    lines = str(err.value).splitlines()
    assert any(line.startswith(f"  {path}:2: seed: ") for line in lines)
    assert any(line.startswith(f"  {path}:4: reward.spec: no reward-model spec named 'nope'") for line in lines)
    with pytest.raises(RecipeError, match=r"command line: reward.spec=nope: reward.spec: no reward-model spec named 'nope'"):
        load_recipe(_write(tmp_path, "name: x\nreward: {}\n"), ["reward.spec=nope"])


def test_a_problem_in_the_spec_file_itself_is_blamed_on_the_spec_file(tmp_path):
    spec = tmp_path / "my_spec.yaml"
    spec.write_text("name: mine\nbase: tiny\ntrain:\n  epochz: 2\n")
    path = _write(tmp_path, f"name: x\nreward:\n  spec: {spec}\n  override: {{max_length: 2}}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    lines = str(err.value).splitlines()
    assert lines[0] == f"{path}: invalid settings"
    assert any(line.startswith(f"  {spec}:4: train.epochz: unknown key 'epochz'") for line in lines)
    assert any(line.startswith(f"  {path}:4: reward.override.max_length: Input should be greater") for line in lines)
