"""The reward stage on a tiny model: what trains, save/load, scoring, metrics, and clear errors."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from rlhf_organic.cli import main
from rlhf_organic.errors import RecipeError, UserError
from rlhf_organic.models.loading import BaseModelError, load_base
from rlhf_organic.reward import evaluate as ev
from rlhf_organic.reward.data import RewardDataError, load_reward_data
from rlhf_organic.reward.items import make_items, tokenizer_texts
from rlhf_organic.reward.model import build_reward_model, load_reward_model, pool
from rlhf_organic.reward.spec import load_spec
from rlhf_organic.reward.stage import train_reward
from rlhf_organic.reward.train import Items, batch_order, score, train

FAST = ["tiny.hidden=32", "max_length=64", "train.epochs=1", "train.batch_size=32"]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A tiny simulated dataset with A/B choices, its ground truth, and a trust folder."""
    root = tmp_path_factory.mktemp("reward")
    runner = CliRunner()
    for args in (["simulate", "--preset", "tiny", "--users", "30", "--set", "preferences_per_user=2", "--out", str(root / "sim"), "-q"],
                 ["ingest", str(root / "sim" / "logs"), "--out", str(root / "ds"), "-q"],
                 ["trust", str(root / "ds"), "--scheme", "per_user", "--set", "reference.folds=3", "--out", str(root / "trust"), "-q"]):
        res = runner.invoke(main, args)
        assert res.exit_code == 0, res.output
    return root


def _model(simulated, tmp_path, *sets):
    spec = load_spec("tiny", sets=FAST + list(sets))
    data = load_reward_data(simulated / "ds", simulated / "trust")
    model, tokenizer = build_reward_model(spec, tmp_path, tokenizer_texts(data, 0))
    return spec, data, model, tokenizer


@pytest.mark.parametrize("full", [[], ["embed_tokens"]])
def test_training_moves_only_lora_head_and_named_modules(simulated, tmp_path, full):
    spec, data, model, tokenizer = _model(simulated, tmp_path, f"lora.modules_to_save={full}")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    items = make_items(tokenizer, data, spec, [])
    train(model, items, spec.train.model_copy(update={"epochs": 0.2}), spec.loss, tokenizer.pad_token_id)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    allowed = ("lora_", "head.") + (("modules_to_save.default.",) if full else ())
    assert all(any(a in n for a in allowed) for n in trainable)
    assert {"head.weight", "head.bias"} <= changed
    assert any("lora_B" in n for n in changed)
    assert any("modules_to_save" in n for n in changed) == bool(full)


def test_weight_zero_items_give_zero_gradient_through_the_model(simulated, tmp_path):
    spec, data, model, tokenizer = _model(simulated, tmp_path)
    items = make_items(tokenizer, data, spec, [])
    from rlhf_organic.reward.train import step_loss

    step = np.arange(8)
    items.point_weight = np.zeros(items.n_point)
    loss, _ = step_loss(model, items, step, spec.loss, tokenizer.pad_token_id)
    loss.backward()
    assert loss.item() == 0
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in model.trainable_parameters())


def test_flip_rates_of_zero_give_the_plain_loss_and_the_stage_trains_with_them(simulated, tmp_path):
    from rlhf_organic.reward.train import step_loss

    spec, plain_data, model, tokenizer = _model(simulated, tmp_path)
    plain = make_items(tokenizer, plain_data, spec, [])
    items = make_items(tokenizer, load_reward_data(simulated / "ds", simulated / "trust", flip_rates=True), spec, [])
    assert items.point_flip is not None and items.pair_flip is not None and items.point_flip.max() > 0
    step = np.concatenate([np.arange(6), plain.n_point + np.arange(min(6, len(plain.chosen_ids)))])
    expected, _ = step_loss(model, plain, step, spec.loss, tokenizer.pad_token_id)
    items.point_flip, items.pair_flip = np.zeros_like(items.point_flip), np.zeros_like(items.pair_flip)
    assert step_loss(model, items, step, spec.loss, tokenizer.pad_token_id)[0].item() == pytest.approx(expected.item(), rel=1e-6)
    items.point_flip, items.pair_flip = items.point_flip + 0.2, items.pair_flip + 0.2
    assert step_loss(model, items, step, spec.loss, tokenizer.pad_token_id)[0].item() != pytest.approx(expected.item(), rel=1e-3)

    spec = load_spec("tiny", sets=FAST + ["loss.flip_rates=true", "train.epochs=0.3"])
    metrics = train_reward(simulated / "ds", tmp_path / "rm", spec, trust=simulated / "trust", progress=False, log=lambda _: None)
    assert np.isfinite(metrics["eval"]["pointwise"]["auc"])
    with pytest.raises(RewardDataError, match="come from a trust folder"):
        train_reward(simulated / "ds", tmp_path / "rm2", spec, progress=False, log=lambda _: None)


def test_pooling_last_ignores_the_padding_side():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert pool(hidden, right, "last").flatten().tolist() == [1.0, 7.0]
    assert pool(hidden, left, "last").flatten().tolist() == [3.0, 7.0]
    assert pool(hidden, right, "mean").flatten().tolist() == [0.5, 5.5]


def test_batch_order_covers_every_item_once():
    items = Items(point_ids=[[1] * n for n in range(1, 40)], chosen_ids=[[1] * 5] * 9, rejected_ids=[[1] * 7] * 9)
    for grouped in (True, False):
        steps = batch_order(items, 4, grouped, np.random.default_rng(0))
        assert sorted(np.concatenate(steps).tolist()) == list(range(len(items)))


def test_train_save_load_gives_identical_scores_and_the_card(simulated, tmp_path):
    spec = load_spec("tiny", sets=FAST + ["head.reasons=true"])
    out = tmp_path / "rm"
    metrics = train_reward(simulated / "ds", out, spec, trust=simulated / "trust", ground_truth=simulated / "sim",
                           progress=False, log=lambda _: None)
    for name in ("adapter/adapter_config.json", "head.safetensors", "reward_model.json", "spec.yaml", "metrics.json", "README.md",
                 "base/config.json"):
        assert (out / name).is_file(), name
    e = metrics["eval"]
    assert {"pointwise", "pairwise", "clean_pointwise", "pointwise_by_trust", "pointwise_by_user_type"} <= set(e)
    assert e["clean_pointwise"]["source"] == "simulator" and 0 <= e["clean_pointwise"]["auc"] <= 1
    assert metrics["reasons"] and "clean-label AUC" in (out / "README.md").read_text()

    model, tokenizer, meta = load_reward_model(out)
    texts = load_reward_data(simulated / "ds")
    from rlhf_organic.reward.model import encode

    ids = encode(tokenizer, texts.point["context"][:20], texts.point["response"][:20], meta["max_length"])
    first, _ = score(model, ids, tokenizer.pad_token_id)
    again, _ = score(load_reward_model(out)[0], ids, tokenizer.pad_token_id)
    np.testing.assert_array_equal(first, again)
    assert np.std(first) > 0

    res = CliRunner().invoke(main, ["reward", "score", str(out), "--data", str(simulated / "ds"),
                                    "--out", str(tmp_path / "s.parquet"), "-q"])
    assert res.exit_code == 0, res.output
    scored = pq.read_table(tmp_path / "s.parquet").to_pandas()
    assert len(scored) == pq.read_metadata(simulated / "ds" / "examples.parquet").num_rows
    assert {"example_id", "score", "p_good"} <= set(scored) and any(c.startswith("reason_") for c in scored)


def test_reward_train_command(simulated, tmp_path):
    res = CliRunner().invoke(main, ["reward", "train", str(simulated / "ds"), "--trust", str(simulated / "trust"),
                                    "--out", str(tmp_path / "rm"), *sum((["--set", s] for s in FAST + ["train.epochs=0.2"]), []), "-q"])
    assert res.exit_code == 0, res.output
    assert "held-out thumbs AUC" in res.output
    assert json.loads((tmp_path / "rm" / "metrics.json").read_text())["trust"] == str(simulated / "trust")
    again = CliRunner().invoke(main, ["reward", "train", str(simulated / "ds"), "--out", str(tmp_path / "rm"), "-q"])
    assert again.exit_code != 0 and "already exists" in again.output


def test_missing_or_incomplete_weights_are_clear_errors(simulated, tmp_path):
    with pytest.raises(RewardDataError, match="weights file .* not found"):
        load_reward_data(simulated / "ds", tmp_path)
    weights = pq.read_table(simulated / "trust" / "examples.parquet").to_pandas().iloc[1:]
    weights.to_parquet(tmp_path / "examples.parquet")
    with pytest.raises(RewardDataError, match="has no weight for 1 of"):
        load_reward_data(simulated / "ds", tmp_path, signals=["thumbs"])


def _copy_dataset(simulated, tmp_path):
    import shutil

    shutil.copytree(simulated / "ds", tmp_path / "ds")
    return tmp_path / "ds"


def test_identical_pair_texts_are_a_clear_error(simulated, tmp_path):
    ds = _copy_dataset(simulated, tmp_path)
    prefs = pd.read_parquet(ds / "preferences.parquet")
    prefs.loc[0, "rejected"] = prefs.loc[0, "chosen"]
    prefs.to_parquet(ds / "preferences.parquet")
    with pytest.raises(RewardDataError, match="identical chosen and rejected .* preference_id"):
        load_reward_data(ds)


def test_empty_dataset_is_a_clear_error(simulated, tmp_path):
    ds = _copy_dataset(simulated, tmp_path)
    examples = pd.read_parquet(ds / "examples.parquet")
    examples["thumbs"] = None
    examples.to_parquet(ds / "examples.parquet")
    (ds / "preferences.parquet").unlink()
    with pytest.raises(RewardDataError, match="no thumbs and preferences to train"):
        load_reward_data(ds)


def test_four_bit_on_cpu_is_refused_with_the_reason(simulated, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BaseModelError, match="needs a CUDA GPU.*zero|silently"):
        load_base(str(simulated), quantization="4bit")


def test_bad_base_and_spec_are_clear_errors(tmp_path):
    with pytest.raises(BaseModelError, match="does not exist"):
        load_base(str(tmp_path / "model.gguf"))
    with pytest.raises(BaseModelError, match="without config.json"):
        load_base(str(tmp_path))
    with pytest.raises(RecipeError, match="no reward-model spec named 'nope'"):
        load_spec("nope")
    with pytest.raises(RecipeError, match=r"(?s)tiny.yaml.*train.epohcs.*did you mean 'epochs'"):
        load_spec("tiny", sets=["train.epohcs=2"])
    with pytest.raises(UserError, match="not a reward-model folder"):
        load_reward_model(tmp_path)


def test_metrics_by_hand():
    assert ev.calibration_error([0.05, 0.15, 0.95], [0, 1, 1]) == pytest.approx((0.05 + 0.85 + 0.05) / 3)
    m = ev.pointwise_metrics([2.0, -1.0, 0.5, -3.0], [1, 0, 0, 0])
    assert m["auc"] == 1.0 and m["accuracy"] == 0.75
    assert ev.pairwise_metrics([1, 2, 3], [0, 5, 1]) == {"n": 3, "accuracy": pytest.approx(2 / 3)}
    groups = ev.by_group(["a", "b", "a"], ev.pairwise_metrics, [1, 2, 3], [0, 5, 4])
    assert groups == {"a": {"n": 2, "accuracy": 0.5}, "b": {"n": 1, "accuracy": 0.0}}


def test_run_recipe_trains_the_reward_model_on_trust_weights(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: t\ndata: {{simulate: {{preset: tiny, users: 20}}}}\ntrust: {{scheme: per_user}}\n"
                      f"reward: {{spec: tiny, override: {{train: {{epochs: 0.5}}, tiny: {{hidden: 32}}}}}}\n"
                      f"output: {{dir: '{tmp_path}/runs/{{name}}'}}\n")
    res = CliRunner().invoke(main, ["run", str(recipe), "-q"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "runs" / "t" / "reward" / "metrics.json").read_text())
    assert metrics["trust"].endswith("trust") and "clean_pointwise" in metrics["eval"]
    assert "Reward model" in (tmp_path / "runs" / "t" / "report.txt").read_text()


def test_recipe_reward_section_is_validated_at_load(tmp_path):
    from rlhf_organic.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: t\nreward: {spec: tiny, override: {lora: {rank: 4}}}\n")
    with pytest.raises(RecipeError, match="unknown key 'rank'"):
        load_recipe(recipe)
    recipe.write_text("name: t\nreward: {spec: missing_spec}\n")
    with pytest.raises(RecipeError, match="no reward-model spec named 'missing_spec'"):
        load_recipe(recipe)


def test_dialogue_text_falls_back_when_the_base_template_refuses_the_turn_order():
    from rlhf_organic.models.tiny import train_tokenizer
    from rlhf_organic.sequences import format_dialogue

    tokenizer = train_tokenizer(["hello there", "how are you"], vocab_size=300)
    tokenizer.chat_template = ("{% if messages[0]['role'] != 'user' %}{{ raise_exception('roles must alternate') }}{% endif %}"
                               "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}")
    assert format_dialogue(tokenizer, [{"role": "user", "content": "hi"}], "yo") == "[user] hi[assistant] yo"
    opened_by_bot = format_dialogue(tokenizer, [{"role": "assistant", "content": "welcome"}], "yo")
    assert opened_by_bot == "<|assistant|>welcome\n<|assistant|>yo\n"


def test_gradient_checkpointing_gives_the_same_gradients(simulated, tmp_path):
    from rlhf_organic.reward.train import step_loss

    spec, data, model, tokenizer = _model(simulated, tmp_path)
    items = make_items(tokenizer, data, spec, [])
    step = np.arange(12)

    def grads():
        model.zero_grad()
        model.train()
        loss, _ = step_loss(model, items, step, spec.loss, tokenizer.pad_token_id)
        loss.backward()
        return [p.grad.clone() for p in model.trainable_parameters() if p.grad is not None]

    plain = grads()
    model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checkpointed = grads()
    assert len(plain) == len(checkpointed) > 0
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, checkpointed))


def test_score_a_jsonl_file_and_bad_score_input(simulated, tmp_path):
    from rlhf_organic.reward.stage import read_examples, score_examples

    spec = load_spec("tiny", sets=FAST + ["train.epochs=0.2"])
    train_reward(simulated / "ds", tmp_path / "rm", spec, progress=False, log=lambda _: None)
    rows = [{"id": 1, "context": "how do I grow tomatoes?", "response": "Plant them in full sun."},
            {"id": 2, "context": [{"role": "user", "content": "hi"}], "response": "you are stupid"},
            {"id": 3, "response": "no context at all"}]
    (tmp_path / "x.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert score_examples(tmp_path / "rm", tmp_path / "x.jsonl", tmp_path / "x.parquet", progress=False) == 3
    scored = pq.read_table(tmp_path / "x.parquet").to_pandas()
    assert len(scored) == 3 and scored["p_good"].between(0, 1).all()

    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "no response column"}) + "\n")
    with pytest.raises(UserError, match="needs a 'response' column"):
        read_examples(tmp_path / "bad.jsonl")
    (tmp_path / "bad2.jsonl").write_text(json.dumps({"response": "ok", "context": [1, 2]}) + "\n")
    with pytest.raises(UserError, match="row 1: context must be"):
        read_examples(tmp_path / "bad2.jsonl")
    with pytest.raises(UserError, match="already exists"):
        score_examples(tmp_path / "rm", tmp_path / "x.jsonl", tmp_path / "x.parquet")


def test_weights_outside_zero_one_are_a_clear_error(simulated, tmp_path):
    weights = pq.read_table(simulated / "trust" / "examples.parquet").to_pandas()
    weights.loc[3, "weight"] = 1.5
    weights.to_parquet(tmp_path / "examples.parquet")
    with pytest.raises(RewardDataError, match=r"weight must be a number in \[0, 1\]; example_id .* 1.5"):
        load_reward_data(simulated / "ds", tmp_path, signals=["thumbs"])


def test_a_bf16_base_runs_under_bf16_autocast_keeping_less_for_backward(simulated, tmp_path):
    """As the policy (tests/test_policy.py): peft's float32 adapters would keep float32 copies of their
    inputs for backward; the reward model's forward runs under bf16 autocast on a bf16 base."""
    _, _, model, _ = _model(simulated, tmp_path, "dtype=bfloat16")
    ids = torch.randint(5, 100, (4, 48))
    mask = torch.ones_like(ids)

    def kept_for_backward(forward) -> int:
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size() if t.is_floating_point() else 0
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            forward()
        return total[0]

    plain = kept_for_backward(lambda: model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state)
    ours = kept_for_backward(lambda: model(ids, mask))
    assert ours < 0.85 * plain
    scores, _ = model(ids, mask)
    scores.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for n, p in model.named_parameters() if "lora_" in n)


def test_bf16_precision_is_recorded_and_the_loaded_model_scores_as_trained(simulated, tmp_path):
    from rlhf_organic.models.loading import bf16_hardware

    if bf16_hardware("cpu") is None:
        pytest.skip("this CPU has neither AMX nor AVX512-BF16: train.precision bf16 is refused here")
    spec = load_spec("tiny", sets=FAST + ["train.precision=bf16", "train.epochs=0.2"])
    out = tmp_path / "rm"
    train_reward(simulated / "ds", out, spec, progress=False, log=lambda _: None)
    model, tokenizer, meta = load_reward_model(out)
    assert meta["precision"] == "bf16" and model.precision == "bf16"
    assert all(p.dtype == torch.float32 for p in model.trainable_parameters())  # float32 master weights
    from rlhf_organic.reward.model import encode

    texts = load_reward_data(simulated / "ds")
    ids = encode(tokenizer, texts.point["context"][:20], texts.point["response"][:20], meta["max_length"])
    bf16, _ = score(model, ids, tokenizer.pad_token_id)
    model.precision = "fp32"
    fp32, _ = score(model, ids, tokenizer.pad_token_id)
    np.testing.assert_allclose(bf16, fp32, atol=0.05)  # bfloat16 rounding, no more
