"""The policy stage on a tiny model: 2-step runs of each method, what trains, the shared base, outputs
that load with PEFT, and clear errors."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rlhf_organic.cli import main
from rlhf_organic.errors import RecipeError
from rlhf_organic.models.loading import BaseModelError
from rlhf_organic.models.tiny import save_tiny
from rlhf_organic.policy.config import PolicySection, settings_from_cli
from rlhf_organic.policy.methods import METHODS
from rlhf_organic.policy.model import attach_reward, build_policy
from rlhf_organic.policy.train import MethodRun
from rlhf_organic.reward.data import load_reward_data, split
from rlhf_organic.reward.model import load_reward_model
from rlhf_organic.reward.train import score
from rlhf_organic.sequences import batch_sequences
from rlhf_organic.training import Objective

TWO_STEPS = {"train": {"batch_size": 4, "max_items": 8, "lr": 0.05}, "eval": {"contexts": 4, "sampling": {"max_new_tokens": 8}},
             "max_prompt_length": 48, "max_completion_length": 16}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A tiny simulated dataset, trust folder, a tiny base folder, a reward model on that base, a judge."""
    root = tmp_path_factory.mktemp("policy")
    runner = CliRunner()
    steps = [["simulate", "--preset", "tiny", "--users", "30", "--set", "preferences_per_user=2", "--out", str(root / "sim"), "-q"],
             ["ingest", str(root / "sim" / "logs"), "--out", str(root / "ds"), "-q"],
             ["trust", str(root / "ds"), "--scheme", "per_user", "--set", "reference.folds=3", "--out", str(root / "trust"), "-q"]]
    for args in steps:
        res = runner.invoke(main, args)
        assert res.exit_code == 0, res.output
    data = load_reward_data(root / "ds")
    texts = list(data.point["response"]) + [m["content"] for c in data.point["context"] for m in c]
    save_tiny(root / "base", texts, kind="decoder", vocab_size=400, hidden=32)
    for args in (["reward", "train", str(root / "ds"), "--trust", str(root / "trust"), "--set", f"base={root / 'base'}",
                  "--set", "train.epochs=0.3", "--set", "max_length=48", "--set", "lora.modules_to_save=[]",
                  "--out", str(root / "reward"), "-q"],
                 ["policy", "judge", str(root / "ds"), "--ground-truth", str(root / "sim"), "--max-examples", "300",
                  "--out", str(root / "judge"), "-q"]):
        res = runner.invoke(main, args)
        assert res.exit_code == 0, res.output
    return root


def _section(sim, method, **extra):
    return PolicySection(method=method, base=str(sim / "base"), **{**TWO_STEPS, **extra})


def _run(sim, section, weights=None, reward=True):
    policy = build_policy(section.base, section.lora, log=lambda m: None)
    if reward:
        attach_reward(policy, sim / "reward", log=lambda m: None)
    data, _ = split(load_reward_data(sim / "ds", sim / "trust"), 0.1, 0)
    if weights is not None:
        data.point["weight"], data.pairs["weight"] = weights, weights
    return policy, MethodRun(policy, section, data, log=lambda m: None)


# settings that make each generating method take exactly two optimizer steps
ONLINE = {"rejection_sampling": {"rejection_sampling": {"rounds": 2, "contexts_per_round": 4, "n": 3, "max_new_tokens": 8}},
          "ppo": {"ppo": {"rounds": 1, "contexts_per_round": 4, "minibatch_size": 2, "ppo_epochs": 1, "max_new_tokens": 8,
                          "target_kl": None}}}


@pytest.mark.parametrize("method", ["dpo", "kto", "cringe", "rejection_sampling", "ppo"])
def test_two_steps_of_each_method_move_only_the_policy_lora(sim, method):
    section = _section(sim, method, **ONLINE.get(method, {}))
    policy, run = _run(sim, section)
    before = {n: p.detach().clone() for n, p in policy.peft.named_parameters()}
    result = METHODS[method].train(run)
    assert len(result["history"]) == 2 and all(np.isfinite(h["loss"]) for h in result["history"])
    changed = {n for n, p in policy.peft.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n and ".default." in n for n in changed)
    assert any("lora_B" in n for n in changed)
    # PPO also trains its value head, which starts at 0; no other method has one
    assert (policy.value_head is not None and policy.value_head.weight.abs().sum() > 0) == (method == "ppo")


@pytest.mark.parametrize("method", ["dpo", "kto", "cringe", "rejection_sampling", "ppo"])
def test_micro_batches_train_what_whole_steps_train(sim, monkeypatch, method):
    """train.micro_batch_size 1: every step in single-item passes gives the whole step's gradient (trust
    weights, KTO's reference point, Cringe's two token means and PPO's token means all over the whole step).
    Compared on the first step's gradients (Adam turns float rounding in near-zero gradients into visible
    parameter differences) and on every step's loss."""
    clip = torch.nn.utils.clip_grad_norm_
    extra = {**ONLINE.get(method, {}), "cringe": {"k": 1}}  # k 1: Cringe's positive token is not sampled
    trained = []
    for micro in (None, 1):
        grads = []

        def recording(params, *args, grads=grads, **kwargs):
            params = list(params)
            grads.append([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params])
            return clip(params, *args, **kwargs)

        monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
        section = _section(sim, method, **extra)
        section = section.model_copy(update={"train": section.train.model_copy(update={"micro_batch_size": micro})})
        policy, run = _run(sim, section)
        trained.append((grads[0] if grads else None, METHODS[method].train(run)["history"], grads))
    (_, whole_history, whole_grads), (_, split_history, split_grads) = trained
    assert [h["loss"] for h in split_history] == pytest.approx([h["loss"] for h in whole_history], rel=1e-4, abs=1e-6)
    scale = max(float(g.abs().max()) for g in whole_grads[0])
    assert scale > 0
    for a, b in zip(split_grads[0], whole_grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("keep, optimizers", [(True, 1), (False, 2)])
def test_online_rounds_keep_one_optimizer_unless_told(sim, monkeypatch, keep, optimizers):
    made = []
    adamw = torch.optim.AdamW

    class Counted(adamw):
        def __init__(self, *args, **kwargs):
            made.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", Counted)
    section = _section(sim, "rejection_sampling", **ONLINE["rejection_sampling"])
    section = section.model_copy(update={"train": section.train.model_copy(update={"keep_optimizer": keep})})
    policy, run = _run(sim, section)
    METHODS["rejection_sampling"].train(run)
    assert len(made) == optimizers
    # one optimizer: its moments carry the first round's step into the second
    assert all(int(state["step"]) == 2 // optimizers for state in made[-1].state.values())


@pytest.mark.parametrize("method", ["dpo", "kto", "cringe"])
def test_weight_zero_everywhere_gives_no_update(sim, method):
    policy, run = _run(sim, _section(sim, method), weights=0.0)
    before = {n: p.detach().clone() for n, p in policy.peft.named_parameters()}
    history = METHODS[method].train(run)["history"]
    assert all(h["loss"] == 0 for h in history)
    assert all(torch.equal(p, before[n]) for n, p in policy.peft.named_parameters())


def test_on_policy_dpo_and_iterative_cringe_use_the_reward_model(sim):
    section = _section(sim, "dpo", dpo={"pairs": [], "on_policy": {"contexts": 6, "n": 3}})
    policy, run = _run(sim, section)
    result = METHODS["dpo"].train(run)
    assert set(result["sources"]) == {"on_policy"} and result["items"] >= 1
    section = _section(sim, "cringe", cringe={"iterations": 2, "contexts_per_iteration": 5})
    policy, run = _run(sim, section)
    result = METHODS["cringe"].train(run)
    assert [r["items"] for r in result["rounds"]] == [8, 13]
    policy, run = _run(sim, section, reward=False)
    with pytest.raises(ValueError, match="reward model"):
        METHODS["cringe"].train(run)


def test_the_reward_model_shares_the_policy_base(sim):
    """One copy of the base: policy, reference (adapter off) and reward adapter + head on the same weights."""
    policy, _ = _run(sim, _section(sim, "kto"))
    assert policy.shares_reward_base
    reward_backbone = load_reward_model(sim / "reward")[0].backbone
    base_numel = sum(p.numel() for n, p in reward_backbone.named_parameters() if "lora_" not in n)
    non_lora = {p.data_ptr(): p.numel() for n, p in policy.peft.named_parameters() if "lora_" not in n}
    lm_head_extra = 0 if policy.peft.get_base_model().config.tie_word_embeddings else policy.peft.get_base_model().lm_head.weight.numel()
    assert sum(non_lora.values()) == base_numel + lm_head_extra  # every base weight exactly once
    # the shared reward scores what the stand-alone reward model scores
    model, tokenizer, meta = load_reward_model(sim / "reward")
    data = load_reward_data(sim / "ds")
    ctx, resp = list(data.point["context"][:6]), list(data.point["response"][:6])
    from rlhf_organic.reward.model import encode

    alone = score(model, encode(tokenizer, ctx, resp, meta["max_length"]), tokenizer.pad_token_id)[0]
    assert np.allclose(policy.reward_scores(ctx, resp), alone, atol=1e-5)
    # the policy adapter is still the active, trainable one afterwards
    assert all(".default." in n for n, p in policy.peft.named_parameters() if p.requires_grad)


def test_reference_is_the_base_with_the_adapter_off(sim):
    from transformers import AutoModelForCausalLM

    policy, _ = _run(sim, _section(sim, "kto"), reward=False)
    with torch.no_grad():
        for n, p in policy.peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    prompts, completions = [[5, 6, 7], [8, 9]], [[10, 11, 2], [12, 2]]
    plain = AutoModelForCausalLM.from_pretrained(sim / "base")
    from rlhf_organic.policy.model import completion_logps
    from rlhf_organic.sequences import batch_sequences

    ids, mask, comp = batch_sequences(prompts, completions, policy.pad_id)
    expected = completion_logps(plain(input_ids=ids, attention_mask=mask).logits, ids, comp)
    assert torch.allclose(policy.sequence_logps(prompts, completions, reference=True), expected, atol=1e-5)
    assert not torch.allclose(policy.sequence_logps(prompts, completions), expected, atol=1e-3)


def test_four_bit_is_refused_on_cpu(sim):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(BaseModelError, match="CUDA"):
        build_policy(str(sim / "base"), PolicySection().lora, quantization="4bit")


def test_cli_trains_evaluates_and_writes_a_loadable_adapter_and_merged_model(sim, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    sets = ["base=tiny", "tiny.hidden=32", "tiny.imitation_max=60", "tiny.vocab_size=400", "train.batch_size=4",
            "train.max_items=8", "eval.contexts=4", "eval.sampling.max_new_tokens=8", "export_merged=true"]
    res = CliRunner().invoke(main, ["policy", "train", str(sim / "ds"), "--method", "kto", "--trust", str(sim / "trust"),
                                    "--reward", str(sim / "reward"), "--judge", str(sim / "judge"), "--out", str(tmp_path / "p"), "-q"]
                             + [a for s in sets for a in ("--set", s)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "p"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 2 and metrics["weighted"]
    assert set(metrics["eval"]["judge"]) >= {"base_good", "tuned_good", "win_rate", "tuned_unsafe_rate"}
    assert metrics["eval"]["kl_to_reference"] >= 0 and "reward" in metrics["eval"]
    assert (out / "samples.md").read_text().count("**tuned**") == 4
    # the adapter loads with PEFT on the saved base and matches the merged export
    ids = torch.tensor([[5, 6, 7, 8]])
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(out / "base"), out / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    with torch.no_grad():
        assert torch.allclose(tuned(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-4)
    # and with the project's own loader
    from rlhf_organic.policy.stage import load_policy

    loaded, tokenizer = load_policy(out)
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-4)
    assert tokenizer.pad_token_id is not None and tokenizer.chat_template
    assert "clean judge p(good)" in res.output


def test_settings_errors_name_the_key():
    with pytest.raises(RecipeError, match="kto.beta"):
        settings_from_cli("kto", ["kto.beta=-1"])
    with pytest.raises(RecipeError, match="no pair source"):
        settings_from_cli("dpo", ["dpo.pairs=[]"])
    with pytest.raises(RecipeError, match="method"):
        settings_from_cli("ppo2", [])


def test_kto_without_thumbs_is_a_clear_error(sim):
    policy, run = _run(sim, _section(sim, "kto"), reward=False)
    run.data.point = run.data.point.iloc[:0]
    with pytest.raises(ValueError, match="kto needs thumbs"):
        METHODS["kto"].train(run)


def test_a_base_without_chat_template_gets_the_default_with_a_warning(sim):
    from rlhf_organic.models.loading import load_tokenizer
    from rlhf_organic.policy.model import ensure_chat_template
    from rlhf_organic.sequences import prompt_text

    tokenizer = load_tokenizer(str(sim / "base"))
    tokenizer.chat_template = None
    messages = []
    ensure_chat_template(tokenizer, messages.append)
    assert messages and "no chat template" in messages[0]
    assert prompt_text(tokenizer, [{"role": "user", "content": "hi"}]) == "<|user|>hi\n<|assistant|>"
    # a template that rejects the turns (two user turns in a row) falls back to the default
    tokenizer.chat_template = "{{ raise_exception('alternate!') }}"
    assert prompt_text(tokenizer, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]).endswith("<|assistant|>")


def test_first_ppo_epoch_on_fresh_rollouts_has_ratio_one_and_kl_zero(sim):
    """The padding trap: rollout log-probs must come from the same (right-padded) pass as training's, so
    the first minibatch of the first epoch sees ratio 1 and KL 0, and a fresh adapter has KL 0 to the base."""
    section = _section(sim, "ppo", ppo={"rounds": 1, "contexts_per_round": 6, "minibatch_size": 6, "ppo_epochs": 2,
                                        "max_new_tokens": 8, "target_kl": None})
    policy, run = _run(sim, section)
    result = METHODS["ppo"].train(run)
    first, second = result["history"]
    assert first["ratio"] == pytest.approx(1.0, abs=1e-6) and first["approx_kl"] == pytest.approx(0.0, abs=1e-10)
    assert first["clipfrac"] == 0
    assert result["rounds"][0]["kl_to_reference"] == pytest.approx(0.0, abs=1e-5)
    assert second["approx_kl"] > 0  # the first update moved the policy


def test_batched_token_stats_match_one_sequence_at_a_time(sim):
    policy, _ = _run(sim, _section(sim, "ppo"), reward=False)
    policy.add_value_head()
    with torch.no_grad():
        for n, p in policy.peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
        policy.value_head.weight.normal_(0, 0.3)
    prompts, completions = [[5, 6, 7, 8, 9], [8, 9], [4, 5, 6]], [[10, 11, 2], [12, 2], [13, 14, 15, 16]]
    logps, values, mask = policy.token_stats(prompts, completions, values=True)
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    for i, (p, c) in enumerate(zip(prompts, completions)):
        one, v, _ = policy.token_stats([p], [c], values=True)
        assert torch.allclose(logps[i, : len(c)], one[0], atol=1e-5) and torch.allclose(values[i, : len(c)], v[0], atol=1e-5)
    assert torch.allclose(logps.sum(1), policy.sequence_logps(prompts, completions), atol=1e-5)


def test_sampling_n_replies_reuses_the_prompt_cache_without_changing_them(sim):
    policy, _ = _run(sim, _section(sim, "rejection_sampling"), reward=False)
    prompts = [[5, 6, 7, 8, 9], [8, 9], [4, 5, 6]]
    for temperature in (0.0, 1.0):
        kwargs = dict(n=3, temperature=temperature, top_p=1.0, max_new_tokens=6, seed=3)
        shared = policy.generate(prompts, **kwargs)
        plain = policy.generate(prompts, reuse_prompt_cache=False, **kwargs)
        assert shared.completions == plain.completions and len(shared.completions) == 9


def test_rejection_sampling_keeps_the_best_and_draws_only_trusted_contexts(sim):
    from rlhf_organic.policy.methods.ppo import draw
    from rlhf_organic.policy.methods.rejection_sampling import select

    scores = np.array([[0.1, 0.9, 0.5], [2.0, -1.0, 2.0]])
    assert select(scores, "best").tolist() == [[False, True, False], [True, False, False]]
    assert select(scores, "top_k", k=2).tolist() == [[False, True, True], [True, False, True]]
    assert select(scores, "threshold", threshold=0.4).tolist() == [[False, True, True], [True, False, True]]
    rng = np.random.default_rng(0)
    assert set(draw(rng, np.array([0.0, 1.0, 0.0, 3.0]), 50)) == {1, 3}
    assert sorted(draw(rng, np.array([0.0, 1.0, 2.0, 3.0]), 3)) == [1, 2, 3]  # without replacement while possible
    section = _section(sim, "rejection_sampling", **ONLINE["rejection_sampling"])
    policy, run = _run(sim, section)
    trusted = run.data.point["user_id"].iloc[0]
    run.user_weight = {u: float(u == trusted) for u in run.data.point["user_id"]} | {u: 0.0 for u in run.data.pairs["user_id"]}
    result = METHODS["rejection_sampling"].train(run)
    assert result["weight_sum"] == result["items"]  # every kept reply is from the one trusted user (weight 1)
    run.user_weight = {u: 0.0 for u in run.user_weight}
    with pytest.raises(ValueError, match="weight 0"):
        METHODS["ppo"].train(run)
    with pytest.raises(RecipeError, match="k"):
        settings_from_cli("rejection_sampling", ["rejection_sampling.keep=top_k", "rejection_sampling.k=5"])


def test_online_methods_need_a_reward_model(sim):
    for method in ("rejection_sampling", "ppo"):
        policy, run = _run(sim, _section(sim, method), reward=False)
        with pytest.raises(ValueError, match="reward model"):
            METHODS[method].train(run)


def test_gradient_checkpointing_gives_the_same_gradients(sim):
    """train.gradient_checkpointing recomputes activations in backward: the same gradients, less memory."""
    section = _section(sim, "dpo", train={**TWO_STEPS["train"], "gradient_checkpointing": True})
    policy, run = _run(sim, section, reward=False)
    with torch.no_grad():
        for n, p in policy.peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)

    def grads():
        policy.peft.train()
        policy.peft.zero_grad(set_to_none=True)
        policy.sequence_logps([[5, 6, 7], [8, 9]], [[10, 11, 2], [12, 2]]).sum().backward()
        return [p.grad.clone() for p in policy.trainable_parameters()]

    plain = grads()
    zero = Objective(lambda step: {}, lambda step, total: (policy.sequence_logps([[5, 6]], [[7, 2]]).sum() * 0, {}))
    run.fit([5, 5], zero, "test")  # the setting turns it on
    assert policy.peft.get_base_model().is_gradient_checkpointing
    checkpointed = grads()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, checkpointed))


def test_a_bf16_base_trains_under_bf16_autocast_keeping_less_for_backward(sim):
    """peft casts each adapter's input to its float32 weights; without autocast every LoRA layer keeps a
    float32 copy of its input for backward (most of the memory of a QLoRA step on a GPU). Ours runs the
    forward under bf16 autocast: less kept, float32 weights and gradients, the same log-probs to bf16 rounding."""
    policy = build_policy(str(sim / "base"), PolicySection().lora, dtype="bfloat16", log=lambda m: None)
    ids = torch.tensor([[5, 6, 7, 8] * 20] * 4)
    mask = torch.ones_like(ids)

    def kept_for_backward(forward) -> tuple[int, torch.Tensor]:
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size() if t.is_floating_point() else 0
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            logits = forward()
        return total[0], logits

    plain, plain_logits = kept_for_backward(lambda: policy.peft(input_ids=ids, attention_mask=mask).logits)
    ours, our_logits = kept_for_backward(lambda: policy.logits(ids, mask))
    assert ours < 0.85 * plain
    assert torch.allclose(our_logits.float(), plain_logits.float(), atol=0.05)
    our_logits.float().sum().backward()
    lora = [p for n, p in policy.peft.named_parameters() if "lora_" in n]
    assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32 for p in lora)


def test_autocast_skips_peft_recasting_adapter_inputs_and_changes_nothing_else(sim):
    """Under our bf16 autocast peft no longer casts each adapter's input to float32 (autocast cast it straight
    back): the logits and every LoRA gradient are bit for bit those of plain autocast with peft's casts, and
    peft's setting is back on afterwards."""
    policy = build_policy(str(sim / "base"), PolicySection().lora, dtype="bfloat16", log=lambda m: None)
    with torch.no_grad():
        for n, p in policy.peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10] * 4] * 3)
    mask = torch.ones_like(ids)
    lora_inputs = []
    layers = [m for n, m in policy.peft.named_modules() if n.endswith("lora_A.default")]
    hooks = [m.register_forward_pre_hook(lambda m, args: lora_inputs.append(args[0].dtype)) for m in layers]

    def run(forward):
        lora_inputs.clear()
        policy.peft.zero_grad(set_to_none=True)
        logits = forward()
        logits.float().sum().backward()
        return logits, [p.grad.clone() for p in policy.trainable_parameters()], set(lora_inputs)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain, plain_grads, plain_inputs = run(lambda: policy.peft(input_ids=ids, attention_mask=mask).logits)
    ours, our_grads, our_inputs = run(lambda: policy.logits(ids, mask))
    for h in hooks:
        h.remove()
    assert plain_inputs == {torch.float32} and our_inputs == {torch.bfloat16}
    assert torch.equal(ours, plain)
    assert all(torch.equal(a, b) for a, b in zip(our_grads, plain_grads))
    assert all(m.cast_input_dtype_enabled for m in policy.peft.modules() if hasattr(m, "cast_input_dtype_enabled"))


def test_attention_setting_picks_the_kernel_and_is_refused_when_unknown(sim, tmp_path):
    """``attention: eager`` loads the base with transformers' eager attention (auto keeps its sdpa); both give
    the same log-probs, padding included; the reward model records it and is scored with it again."""
    logps = {}
    for attention, kernel in (("auto", "sdpa"), ("eager", "eager")):
        policy = build_policy(str(sim / "base"), PolicySection().lora, attention=attention, log=lambda m: None)
        assert policy.peft.get_base_model().config._attn_implementation == kernel
        logps[attention] = policy.sequence_logps([[5, 6, 7, 8], [9]], [[10, 2], [11, 12, 13, 2]])
    assert torch.allclose(logps["auto"], logps["eager"], atol=1e-5)
    with pytest.raises(ValueError, match="attention"):
        PolicySection(attention="flash")
    res = CliRunner().invoke(main, ["reward", "train", str(sim / "ds"), "--set", f"base={sim / 'base'}", "--set", "attention=eager",
                                    "--set", "train.epochs=0.1", "--set", "max_length=32", "--set", "lora.modules_to_save=[]",
                                    "--out", str(tmp_path / "rm"), "-q"])
    assert res.exit_code == 0, res.output
    model, _, meta = load_reward_model(tmp_path / "rm")
    assert meta["attention"] == "eager" and model.backbone.get_base_model().config._attn_implementation == "eager"


def test_bf16_precision_autocasts_a_float32_base_and_keeps_float32_master_weights(sim):
    from rlhf_organic.models.loading import bf16_hardware

    if bf16_hardware("cpu") is None:
        pytest.skip("this CPU has neither AMX nor AVX512-BF16: train.precision bf16 is refused here (tested below)")
    losses = {}
    for precision in ("fp32", "bf16"):
        section = _section(sim, "dpo", train={**TWO_STEPS["train"], "precision": precision})
        policy, run = _run(sim, section, reward=False)
        policy.precision = section.train.precision  # as the stage sets it
        ids, mask, comp = batch_sequences([[5, 6, 7]], [[8, 9, 2]], policy.pad_id)
        logits = policy.completion_logits(ids, mask, comp)[0]
        assert logits.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
        history = METHODS["dpo"].train(run)["history"]
        losses[precision] = [h["loss"] for h in history]
        assert all(p.dtype == torch.float32 for p in policy.trainable_parameters())  # the master weights
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)


def test_bf16_precision_is_refused_without_bf16_hardware(monkeypatch):
    from rlhf_organic.models.loading import check_bf16

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    with pytest.raises(BaseModelError, match="precision: bf16 needs"):
        check_bf16("cpu")


def test_dpo_with_flip_rates_uses_each_pairs_rate_and_rates_of_zero_give_plain_dpo(sim):
    from rlhf_organic.policy.methods.dpo import build_pairs, either_flipped

    with pytest.raises(ValueError, match="set loss: robust"):
        _section(sim, "dpo", dpo={"flip_rates": True})
    section = _section(sim, "dpo", dpo={"loss": "robust", "flip_rates": True})
    policy = build_policy(section.base, section.lora, log=lambda m: None)
    data, _ = split(load_reward_data(sim / "ds", sim / "trust", flip_rates=True), 0.1, 0)
    pairs = build_pairs(MethodRun(policy, section, data, log=lambda m: None))
    assert pairs["flip"].between(0, 0.45).all() and pairs["flip"].max() > 0
    assert either_flipped(0.1, 0.2) == pytest.approx(0.28) and either_flipped(0.4, 0.4) == 0.45

    histories = []
    for cfg, flip in (({"loss": "robust", "flip_rates": True}, 0.0), ({"loss": "sigmoid"}, None)):
        section = _section(sim, "dpo", dpo=cfg)
        policy = build_policy(section.base, section.lora, log=lambda m: None)
        data, _ = split(load_reward_data(sim / "ds", sim / "trust", flip_rates=flip is not None), 0.1, 0)
        if flip is not None:
            data.point["flip"], data.pairs["flip"] = flip, flip
        histories.append(METHODS["dpo"].train(MethodRun(policy, section, data, log=lambda m: None))["history"])
    assert [h["loss"] for h in histories[0]] == pytest.approx([h["loss"] for h in histories[1]], rel=1e-5)
