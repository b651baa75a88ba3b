"""Every shipped recipe validates, and runs end to end for 2 policy steps on a tiny model.

The runs share what they can: each reuses the completed stages of the earlier ones with the same
fingerprint (simulation, dataset, trust, clean judge, tiny base), so only what differs is computed.
"""

from pathlib import Path

import pytest

from rlhf_organic.ablate import run_ablation
from rlhf_organic.pipeline import run_recipe
from rlhf_organic.recipe import load_recipe

ROOT = Path(__file__).parent.parent
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
QUIET = {"progress": False, "log": lambda m: None, "echo": lambda m: None}

# a small simulated corpus, the tiny base, a short reward model, 2 policy steps, a short evaluation
TINY = ["data.source=simulate", "data.format=auto", "data.simulate.preset=realistic", "data.simulate.users=30", "trust.ground_truth=null",
        "reward.spec=tiny", "reward.override={train: {epochs: 0.3}}",
        "policy.base=tiny", "policy.quantization=none", "policy.dtype=float32", "policy.export_merged=false",
        "policy.tiny.imitation_max=200", "policy.tiny.imitation_epochs=1",
        "policy.max_prompt_length=48", "policy.max_completion_length=16",
        "policy.train.batch_size=4", "policy.train.max_items=8",
        "policy.eval.contexts=4", "policy.eval.sampling.max_new_tokens=8",
        "policy.rejection_sampling.rounds=1", "policy.rejection_sampling.contexts_per_round=4",
        "policy.rejection_sampling.n=2", "policy.rejection_sampling.max_new_tokens=8",
        "policy.ppo.rounds=1", "policy.ppo.contexts_per_round=4", "policy.ppo.minibatch_size=2",
        "policy.ppo.ppo_epochs=1", "policy.ppo.max_new_tokens=8",
        "policy.cringe.contexts_per_iteration=4", "output.report_to=none"]
TINY += [f"policy.{m}.{key}" for m in ("rloo", "grpo", "online_dpo")
         for key in ("rounds=1", "contexts_per_round=2", "k=2", "epochs=1", "minibatch_size=4", "max_new_tokens=8")]
TINY += ["policy.online_dpo.min_gap=0"]  # two contexts' replies from a barely trained reward model: near-ties are likely


@pytest.fixture(scope="module")
def done() -> list[Path]:
    return []


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_runs_two_steps_on_a_tiny_model(path, tmp_path_factory, done):
    out = tmp_path_factory.mktemp(path.stem)
    overrides = TINY + [f"output.dir={out}/run"]
    recipe = load_recipe(path, overrides)
    if recipe.ablate is not None:
        result = run_ablation(path, overrides, seeds=1, out=out / "ablation", reuse_from=tuple(done), **QUIET)
        assert len(result["cells"]) == len(next(iter(recipe.ablate.grid.values())))
        assert (out / "ablation" / "report.html").is_file()
        return
    markers = run_recipe(recipe, reuse_from=tuple(done), **QUIET)
    done.append(out / "run")
    assert {"ingest", "trust", "reward", "policy"} <= set(markers)
    assert markers["policy"]["metrics"]["train"]["steps"] >= 1
    assert "judge" in markers["policy"]["metrics"]["eval"]
    assert (out / "run" / "report.md").is_file() and (out / "run" / "policy" / "adapter").is_dir()
