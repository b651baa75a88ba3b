"""Method and scheme contracts: a new policy method is one module plus one registry line, and everything
built from the registry (the recipe's sections and JSON schema, the CLI's help and listings, the FSDP
refusal, the reward-model check) takes it; a contract's promises are checked."""

import importlib.util
import json

import numpy as np
import pytest
from click.testing import CliRunner

from rlhf_organic.cli import main
from rlhf_organic.contracts import MethodContract, SchemeContract
from rlhf_organic.errors import RecipeError, UserError
from rlhf_organic.models.tiny import save_tiny
from rlhf_organic.policy.config import PolicySection, settings_from_cli
from rlhf_organic.policy.methods import METHODS, register_method, unregister_method
from rlhf_organic.recipe import load_recipe, recipe_schema
from rlhf_organic.reward.data import load_reward_data
from rlhf_organic.section import Section
from rlhf_organic.trust.config import TrustSection
from rlhf_organic.trust.data import from_arrays
from rlhf_organic.trust.scheme import SchemeConfig, TrustContext, TrustResult
from rlhf_organic.trust.schemes import SCHEMES, register_scheme, unregister_scheme
from rlhf_organic.trust.stage import run_scheme

# The whole method, as someone adding one would write it: settings, train, contract. Nothing else in the
# package changes; the test registers it with one line.
TOY_METHOD = '''
"""Toy: trust-weighted cross-entropy on the liked replies (supervised fine-tuning on the thumbs up)."""

import numpy as np
from pydantic import Field

from rlhf_organic.contracts import MethodContract
from rlhf_organic.section import Section

DESCRIPTION = "toy: weighted cross-entropy on liked replies"


class Config(Section):
    scale: float = Field(1.0, gt=0, description="multiplies the loss")


def train(run) -> dict:
    from rlhf_organic.losses import token_nll, token_weight_sum
    from rlhf_organic.policy.model import batch_sequences
    from rlhf_organic.policy.train import completion_tokens, weights_tensor
    from rlhf_organic.training import Objective

    policy, point = run.policy, run.data.point
    liked = point[point["label"] > 0]
    liked = liked.iloc[run.limit(len(liked))].reset_index(drop=True)
    prompts, replies = run.prompts(liked["context"]), run.completions(liked["response"])
    weights = liked["weight"].to_numpy(np.float64)
    tokens = np.array([completion_tokens(p, c) for p, c in zip(prompts, replies)], np.float64)

    def totals(step) -> dict:
        return {"weight": token_weight_sum(tokens[step], weights[step])}

    def loss(step, total):
        ids, mask, comp = batch_sequences([prompts[i] for i in step], [replies[i] for i in step], policy.pad_id, policy.device)
        logits, labels, comp, _, _ = policy.completion_logits(ids, mask, comp)
        w = weights_tensor(weights[step], logits.device)
        return run.config.scale * token_nll(logits, labels, comp, w, total["weight"]), {}

    lengths = [len(p) + len(c) for p, c in zip(prompts, replies)]
    history = run.fit(lengths, Objective(totals, loss), "policy toy")
    return {"items": len(liked), "weight_sum": float(weights.sum()), "history": history}


CONTRACT = MethodContract(name="toy", description=DESCRIPTION, settings=Config, train=train,
                          fsdp="the toy method is only tried on one process")
'''


def _import(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def toy(tmp_path):
    """The toy method, imported from its own file and registered (one line); removed afterwards."""
    path = tmp_path / "toy_method.py"
    path.write_text(TOY_METHOD, encoding="utf-8")
    module = _import(path, "toy_method")
    register_method(module.CONTRACT)
    yield module
    unregister_method("toy")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny simulated dataset and a tiny base on its texts."""
    root = tmp_path_factory.mktemp("contracts")
    runner = CliRunner()
    for args in (["simulate", "--preset", "tiny", "--users", "30", "--out", str(root / "sim"), "-q"],
                 ["ingest", str(root / "sim" / "logs"), "--out", str(root / "ds"), "-q"]):
        res = runner.invoke(main, args)
        assert res.exit_code == 0, res.output
    point = load_reward_data(root / "ds").point
    save_tiny(root / "base", list(point["response"]) + [m["content"] for c in point["context"] for m in c],
              kind="decoder", vocab_size=400, hidden=32)
    return root


def test_a_method_from_one_module_runs_through_policy_train(toy, data, tmp_path):
    out = tmp_path / "policy"
    res = CliRunner().invoke(main, [
        "policy", "train", str(data / "ds"), "--method", "toy", "--set", f"base={data / 'base'}", "--set", "toy.scale=0.5",
        "--set", "train.batch_size=4", "--set", "train.max_items=8", "--set", "train.lr=0.05", "--set", "eval.contexts=2",
        "--set", "eval.sampling.max_new_tokens=4", "--set", "max_prompt_length=48", "--set", "max_completion_length=16",
        "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "toy" and metrics["train"]["items"] == 8 and metrics["train"]["steps"] == 2
    assert np.isfinite(metrics["train"]["final_loss"]) and metrics["train"]["final_loss"] > 0
    assert json.loads((out / "policy.json").read_text())["method"] == "toy"
    assert "scale: 0.5" in (out / "settings.yaml").read_text()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_a_registered_method_is_in_the_recipe_schema_the_sections_and_the_listings(toy, tmp_path):
    schema = recipe_schema()
    policy = schema["$defs"]["PolicySection"]["properties"]
    assert "toy" in policy["method"]["enum"] and "toy" in policy["method"]["description"]
    assert policy["toy"]["description"] == toy.DESCRIPTION
    assert "scale" in schema["$defs"][policy["toy"]["$ref"].rsplit("/", 1)[1]]["properties"]
    assert settings_from_cli("toy", ["toy.scale=2"]).method_config() == toy.Config(scale=2)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\npolicy:\n  method: toy\n  toy:\n    scale: 3\n")
    assert load_recipe(recipe).policy.toy.scale == 3
    recipe.write_text("name: r\npolicy:\n  method: tyo\n")
    with pytest.raises(RecipeError, match="did you mean 'toy'"):
        load_recipe(recipe)
    with pytest.raises(RecipeError, match="scale"):
        settings_from_cli("toy", ["toy.scale=0"])
    listing = CliRunner().invoke(main, ["policy", "methods"])
    assert listing.exit_code == 0 and "toy " in listing.stdout and toy.DESCRIPTION in listing.stdout
    assert "FSDP: no, the toy method is only tried on one process" in listing.stdout and "scale" in listing.stdout
    assert "toy" in CliRunner().invoke(main, ["policy", "train", "--help"]).stdout
    assert "toy" in json.loads(CliRunner().invoke(main, ["schema"]).stdout)["$defs"]["PolicySection"]["properties"]


def test_removing_a_method_rebuilds_the_sections_without_it(tmp_path):
    before = recipe_schema()
    module = _import(_write(tmp_path / "toy_method.py", TOY_METHOD), "toy_method_2")
    register_method(module.CONTRACT)
    with pytest.raises(ValueError, match="already registered"):
        register_method(module.CONTRACT)
    unregister_method("toy")
    assert recipe_schema() == before  # the built-in methods' schema is as it was
    assert "toy" not in PolicySection.model_fields
    with pytest.raises(RecipeError, match="did you mean 'kto'"):
        settings_from_cli("toy", [])
    with pytest.raises(KeyError, match="unknown policy method 'kot' \\(did you mean 'kto'\\?\\)"):
        METHODS["kot"]


def test_a_method_without_fsdp_support_is_refused_under_fsdp_naming_its_reason(toy, monkeypatch, tmp_path):
    from rlhf_organic.policy.stage import train_policy

    for var, value in {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "WORLD_SIZE": "2", "RANK": "0"}.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(UserError, match=r"toy does not run under FSDP \(the toy method is only tried on one process\).*"
                                        r"one of dpo, kto, cringe, rejection_sampling \("):
        train_policy(tmp_path, tmp_path / "out", settings_from_cli("toy", []))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method, sets, why", [("ppo", [], "ppo needs a reward model: "),
                                               ("dpo", ["dpo.on_policy.contexts=2"], r"dpo needs a reward model for on-policy pairs")])
def test_a_method_that_needs_a_reward_model_is_refused_without_one_before_any_work(data, tmp_path, method, sets, why):
    args = ["policy", "train", str(data / "ds"), "--method", method, "--out", str(tmp_path / "out")]
    res = CliRunner().invoke(main, args + [x for s in sets for x in ("--set", s)])
    assert res.exit_code == 2 and why in res.stderr and "--reward" in res.stderr
    assert not (tmp_path / "out").exists()


def test_a_recipe_whose_method_needs_a_reward_model_needs_a_reward_section(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\npolicy:\n  method: ppo\n")
    with pytest.raises(RecipeError, match="policy method ppo needs a reward model: add a reward section"):
        load_recipe(recipe)
    with pytest.raises(RecipeError, match=r"dpo needs a reward model for on-policy pairs \(dpo.on_policy.contexts > 0\)"):
        load_recipe(recipe, ["policy.method=dpo", "policy.dpo.on_policy.contexts=4"])
    assert load_recipe(recipe, ["policy.method=dpo"]).reward is None
    assert load_recipe(recipe, ["reward.spec=tiny"]).policy.method == "ppo"


def test_the_contracts_say_what_the_methods_need():
    assert [name for name, c in METHODS.items() if not c.supports_fsdp] == ["ppo", "rloo", "grpo", "online_dpo"]
    online_rl = {"ppo", "rloo", "grpo", "online_dpo"}
    assert {name for name, c in METHODS.items() if c.needs_reward_model is True} == {"rejection_sampling"} | online_rl
    dpo = METHODS["dpo"]
    assert not dpo.requires_reward(dpo.settings()) and dpo.requires_reward(dpo.settings(on_policy={"contexts": 1}))
    assert METHODS["cringe"].requires_reward(METHODS["cringe"].settings(iterations=2))


def test_a_result_that_breaks_its_contract_is_a_clear_error():
    contract = MethodContract(name="broken", description="x", settings=Section, train=lambda run: {},
                              returns=("items", "rounds"))
    contract.check_result({"items": 1, "rounds": [], "history": []})
    with pytest.raises(RuntimeError, match="broken broke its contract: its result lacks rounds"):
        contract.check_result({"items": 1, "history": []})
    with pytest.raises(RuntimeError, match="lacks a history list"):
        contract.check_result({"items": 1, "rounds": [], "history": None})
    with pytest.raises(ValueError, match="reason"):
        MethodContract(name="x", description="x", settings=Section, train=lambda run: {}, fsdp=False)
    with pytest.raises(ValueError, match="reward_model_when"):
        MethodContract(name="x", description="x", settings=Section, train=lambda run: {}, needs_reward_model=lambda cfg: True)
    with pytest.raises(ValueError, match="lower-case"):
        MethodContract(name="Toy", description="x", settings=Section, train=lambda run: {})


class _HalfConfig(SchemeConfig):
    level: float = 0.5


def _halve_labels(data, cfg, ctx):
    """Trust 1 for everyone, each label weighted ``level``: per-label weights."""
    return TrustResult(trust=np.ones(data.n_users), weight=np.full(data.n_examples, cfg.level))


@pytest.fixture
def half():
    register_scheme(SchemeContract(name="half", description="everyone trusted, every label half", settings=_HalfConfig,
                                   compute=_halve_labels, reference=False))
    yield
    unregister_scheme("half")


def test_a_registered_scheme_is_in_the_default_trust_section_and_leaves_no_trace(tmp_path):
    before = recipe_schema()
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\n")
    register_scheme(SchemeContract(name="half", description="x", settings=_HalfConfig, compute=_halve_labels))
    try:
        assert load_recipe(recipe).trust.half == _HalfConfig()  # the default trust section has it too
        assert load_recipe(recipe, ["trust.scheme=half", "trust.half.level=0.2"]).trust.scheme_config().level == 0.2
    finally:
        unregister_scheme("half")
    assert recipe_schema() == before and "half" not in load_recipe(recipe).trust.model_dump()
    with pytest.raises(RecipeError, match="did you mean 'uniform'"):
        load_recipe(recipe, ["trust.scheme=unifrom"])


def test_a_registered_scheme_runs_and_is_listed_and_its_weight_promise_is_checked(half):
    data = from_arrays(["a", "b"], [0, 1, 1], ["x", "y", "z"], [1, 0, 1])
    ctx = TrustContext()
    result, cfg = run_scheme(data, TrustSection(scheme="half", half={"level": 0.25}), ctx, log=lambda s: None)
    assert cfg["level"] == 0.25 and np.allclose(result.weight, 0.25)
    listing = CliRunner().invoke(main, ["trust", "--list-schemes"])
    assert "everyone trusted, every label half" in listing.stdout
    assert "half" in recipe_schema()["$defs"]["TrustSection"]["properties"]["scheme"]["enum"]
    unregister_scheme("half")
    # the same compute, declared as weighing labels only by their users' trust: the stage catches the broken promise
    register_scheme(SchemeContract(name="half", description="x", settings=_HalfConfig, compute=_halve_labels,
                                   reference=False, label_weights=False))
    with pytest.raises(RuntimeError, match="half broke its contract: label_weights=False"):
        run_scheme(data, TrustSection(scheme="half"), ctx, log=lambda s: None)
    assert SCHEMES["half"].needs() == []


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path
