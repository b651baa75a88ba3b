"""Recipe loading: every problem found before any work, named by file, line and key path."""

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
    assert "valid keys: chunk_mb, format, inputs, max_context, privacy, simulate, source, strict" in msg


def test_unknown_section(tmp_path):
    with pytest.raises(RecipeError, match=r"outptu: unknown key 'outptu' \(did you mean 'output'\?\); valid keys: ablate, data, name, output, policy, reward, seed, trust"):
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
    with pytest.raises(RecipeError, match=r"command line: data\.simulate\.users: Input should be greater"):
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
