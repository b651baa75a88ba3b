"""The GPU tier: QLoRA (NF4 4-bit, bf16 compute) on a random-init Llama built here, nothing downloaded.

It runs where a CUDA GPU is present (``bash scripts/gpu_check.sh`` on a GPU machine) and is skipped,
with the reason shown, everywhere else. ``RLHF_GPU_TIER_ON_CPU=1`` runs the same tests on the CPU in
float32 without quantization (the assertions only 4-bit can satisfy are left out): a check of the tier
itself before a GPU is at hand.

Environment: ``RLHF_GPU_SIZE`` (a ``models.random_init`` size, default ``tiny``); ``RLHF_GPU_TOKENIZER``
(a tokenizer folder, e.g. ``.dev/tok`` with SmolLM2's; default: one trained on the simulated texts);
``RLHF_GPU_REALISTIC_SIZE`` (the deep model of the NaN checks, default ``0.8b``, CUDA only; ``none``
skips them); ``RLHF_GPU_TIER_REPORT`` (a JSON file for the measurements: losses, log-prob gaps, peak memory).
"""

from __future__ import annotations

import gc
import inspect
import json
import math
import os
import subprocess
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import rlhf_organic
from rlhf_organic.cli import main
from rlhf_organic.policy.methods import METHODS
from rlhf_organic.reward.data import RewardData, load_reward_data, split

CUDA = torch.cuda.is_available()
ON_CPU = not CUDA and os.environ.get("RLHF_GPU_TIER_ON_CPU") == "1"
SIZE = os.environ.get("RLHF_GPU_SIZE", "tiny")
REALISTIC = os.environ.get("RLHF_GPU_REALISTIC_SIZE", "0.8b")
QUANT, DTYPE = ("4bit", "bfloat16") if CUDA else ("none", "float32")

pytestmark = pytest.mark.skipif(not (CUDA or ON_CPU), reason="no CUDA GPU: the GPU tier runs on a CUDA machine "
                                "(bash scripts/gpu_check.sh; RLHF_GPU_TIER_ON_CPU=1 checks it on CPU)")
cuda_only = pytest.mark.skipif(not CUDA, reason="no CUDA GPU: the realistic-depth case runs on a CUDA machine only "
                               "(bash scripts/gpu_check.sh)")
REPORT: dict = {"mode": "cuda" if CUDA else "cpu", "size": SIZE, "quantization": QUANT, "dtype": DTYPE, "tests": {}}


def quiet(message):
    pass


# ---- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def report():
    threads = torch.get_num_threads()
    if ON_CPU:  # tiny matrices: one thread is as fast alone and ten times faster on a busy machine
        torch.set_num_threads(1)
    yield REPORT
    torch.set_num_threads(threads)
    if path := os.environ.get("RLHF_GPU_TIER_REPORT"):
        REPORT["device"] = torch.cuda.get_device_name() if CUDA else "cpu"
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(REPORT, indent=2, default=str) + "\n")


@pytest.fixture(autouse=True)
def measured(request):
    """Seconds and peak GPU memory of each test into the report; the GPU's cache emptied after it."""
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    row = REPORT["tests"].setdefault(request.node.name, {})
    yield row
    row["seconds"] = round(time.perf_counter() - started, 2)
    gc.collect()
    if CUDA:
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        torch.cuda.empty_cache()


def invoke(*args) -> str:
    """Run the real command line in this process; its output, or a failure with the output and traceback."""
    res = CliRunner().invoke(main, [str(a) for a in args])
    if res.exit_code != 0:
        trace = "".join(traceback.format_exception(*res.exc_info)) if res.exc_info and res.exc_info[0] is not SystemExit else ""
        pytest.fail(f"rlhf-organic {' '.join(str(a) for a in args[:2])} exited {res.exit_code}:\n{res.output[-4000:]}\n{trace[-4000:]}")
    return res.output


def simulated(root: Path, *simulate_args, trust_args=("--scheme", "per_user", "--set", "reference.folds=3")) -> Path:
    invoke("simulate", *simulate_args, "--out", root / "sim", "-q")
    invoke("ingest", root / "sim" / "logs", "--out", root / "ds", "-q")
    invoke("trust", root / "ds", *trust_args, "--out", root / "trust", "-q")
    return root


def random_base(root: Path, size: str) -> Path:
    """A random-init Llama of ``size`` with the tokenizer of RLHF_GPU_TOKENIZER, or one trained on root/ds's texts."""
    from transformers import AutoTokenizer

    from rlhf_organic.models.random_init import save_random_llama
    from rlhf_organic.models.tiny import train_tokenizer

    if folder := os.environ.get("RLHF_GPU_TOKENIZER"):  # tokenizer files alone (no config.json): not load_tokenizer
        tokenizer = AutoTokenizer.from_pretrained(folder)
    else:
        data = load_reward_data(root / "ds")
        texts = list(data.point["response"]) + [m["content"] for c in data.point["context"] for m in c]
        tokenizer = train_tokenizer(texts, 2000)
    if ON_CPU and "RLHF_GPU_SIZE" not in os.environ:
        # the CPU check of the tier: the size's shape with the tokenizer's own vocabulary, not 49k logits per token
        from transformers import LlamaForCausalLM

        from rlhf_organic.models.random_init import llama_config

        config = llama_config(size, tokenizer)
        config.vocab_size = len(tokenizer)
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(root / f"base_{size}")
        tokenizer.save_pretrained(root / f"base_{size}")
        return root / f"base_{size}"
    return save_random_llama(root / f"base_{size}", tokenizer, size)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulated(tmp_path_factory.mktemp("gpu_tier"), "--preset", "tiny", "--users", "30", "--set", "preferences_per_user=2")


@pytest.fixture(scope="module")
def base(sim):
    return random_base(sim, SIZE)


def reward_args(base: Path, max_length: int) -> list[str]:
    return ["--spec", "smollm2", "--set", f"base={base}", "--set", f"quantization={QUANT}", "--set", f"dtype={DTYPE}",
            "--set", f"max_length={max_length}"]


@pytest.fixture(scope="module")
def reward(sim, base):
    """A reward model trained as QLoRA on the same base through the real command line (smollm2's spec)."""
    out = sim / "reward"
    invoke("reward", "train", sim / "ds", "--trust", sim / "trust", *reward_args(base, 64), "--set", "train.epochs=0.5",
           "--set", "train.batch_size=8", "--out", out, "-q")
    return out


def section(method: str, base: Path, **settings):
    from rlhf_organic.policy.config import PolicySection

    defaults = {"train": {"batch_size": 4, "max_items": 12}, "eval": {"contexts": 0, "sampling": {"max_new_tokens": 8}},
                "max_prompt_length": 48, "max_completion_length": 16, "dtype": DTYPE, "quantization": QUANT}
    return PolicySection(method=method, base=str(base), **{**defaults, **settings})


def policy_run(sim: Path, sec, reward: Path | None = None, data: RewardData | None = None):
    """(policy on the base as ``sec`` loads it, with the reward model as a second adapter, MethodRun)."""
    from rlhf_organic.policy.model import attach_reward, build_policy
    from rlhf_organic.policy.train import MethodRun

    policy = build_policy(sec.base, sec.lora, dtype=sec.dtype, quantization=sec.quantization, log=quiet)
    if reward is not None:
        assert attach_reward(policy, reward, log=quiet) == "shared"
    if data is None:
        data, _ = split(load_reward_data(sim / "ds", sim / "trust"), 0.1, 0)
    return policy, MethodRun(policy, sec, data, log=quiet)


def snapshot(module) -> dict:
    """Every parameter's values (a 4-bit weight's packed bytes as they are), copied."""
    return {n: p.detach().as_subclass(torch.Tensor).clone() for n, p in module.named_parameters()}


def moved(module, before: dict) -> set[str]:
    return {n for n, p in module.named_parameters() if not torch.equal(p.detach().as_subclass(torch.Tensor), before[n])}


def four_bit_states(module) -> dict:
    """name -> (packed weight, absmax) of every bitsandbytes 4-bit layer; {} for a model without any."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return {}
    return {name: (m.weight.detach().as_subclass(torch.Tensor).clone(), m.weight.quant_state.absmax.clone())
            for name, m in module.named_modules() if isinstance(m, Linear4bit)}


def assert_4bit_base(module, before: dict | None = None) -> None:
    """On CUDA: the base's linear layers are NF4 4-bit, and (with ``before``) their bytes did not change."""
    if not CUDA:
        return
    now = four_bit_states(module)
    assert now, "no bitsandbytes 4-bit layer in a model loaded with quantization 4bit"
    assert all(w.dtype == torch.uint8 for w, _ in now.values())
    if before is not None:
        assert now.keys() == before.keys()
        changed = [n for n, (w, a) in now.items() if not (torch.equal(w, before[n][0]) and torch.equal(a, before[n][1]))]
        assert not changed, f"4-bit base weights changed: {changed[:5]}"


def all_finite(values) -> bool:
    return all(v is None or (isinstance(v, (int, float)) and math.isfinite(v)) for v in values)


def prompts_of(policy, data: RewardData, n: int, max_length: int = 48):
    from rlhf_organic.policy.model import encode_prompts

    return encode_prompts(policy.tokenizer, list(data.point["context"][:n]), max_length)


@torch.no_grad()
def assert_finite_logits(policy, prompts, row: dict) -> None:
    """The policy's and the reference's logits on ``prompts`` are finite (a clearer failure than sampling's
    device-side assert); their largest magnitude goes into the report."""
    from rlhf_organic.sequences import batch_sequences

    ids, mask, _ = batch_sequences(prompts, [[policy.tokenizer.eos_token_id]] * len(prompts), policy.pad_id, policy.device)
    for reference in (False, True):
        with policy.reference() if reference else nullcontext():
            logits = policy.logits(ids, mask).float()
        bad = ~torch.isfinite(logits)
        row[f"max_abs_logit{'_reference' if reference else ''}"] = float(logits[~bad].abs().max()) if (~bad).any() else None
        assert not bad.any(), f"{int(bad.sum())} of {bad.numel()} logits are not finite (reference={reference})"


def assert_sampling_works(policy, prompts, row: dict, **sampling) -> None:
    """Sampled and greedy replies, from the policy and the reference: token ids in range, decoded text,
    finite log-probs."""
    vocab = policy.peft.get_base_model().config.vocab_size
    texts = []
    for reference in (False, True):
        for temperature in (sampling.get("temperature", 0.7), 0.0):
            gen = policy.generate(prompts, temperature=temperature, top_p=sampling.get("top_p", 0.9), n=2, seed=0,
                                  max_new_tokens=sampling.get("max_new_tokens", 12), reference=reference)
            assert len(gen.completions) == len(gen.texts) == 2 * len(prompts)
            assert all(c and all(0 <= t < vocab for t in c) for c in gen.completions)
            assert all(isinstance(t, str) for t in gen.texts)
            texts += gen.texts
            with torch.no_grad():
                logps = policy.sequence_logps([p for p in prompts for _ in range(2)], gen.completions, reference=reference)
            assert torch.isfinite(logps).all(), logps
    if len(policy.tokenizer) >= vocab:  # every id the model can sample decodes to something
        assert any(texts)
    row["sample"] = texts[0][:200]


# ---- the tests -----------------------------------------------------------------------------------


def test_offline_load_with_hub_kernels_auto(base):
    """HF_HUB_OFFLINE=1 with transformers' hub kernels (on by default for CUDA models in 5.25): the base
    loads (4-bit on CUDA) and runs, in a fresh process that reads the variable at import."""
    from rlhf_organic.models.loading import load_base

    if "hub_kernels" not in inspect.signature(load_base).parameters:
        pytest.skip("load_base has no hub_kernels setting yet")
    code = ("import sys, torch\nfrom rlhf_organic.models.loading import load_base\n"
            "m = load_base(sys.argv[1], causal_lm=True, dtype=sys.argv[2], quantization=sys.argv[3], hub_kernels='auto')\n"
            "logits = m(input_ids=torch.tensor([[1, 2, 3, 4]], device=m.device)).logits\n"
            "assert torch.isfinite(logits).all(), logits\nprint('loaded on', m.device)\n")
    env = {k: v for k, v in os.environ.items() if k != "USE_HUB_KERNELS"}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(filter(None, [str(Path(rlhf_organic.__file__).parents[1]),
                                                                             env.get("PYTHONPATH")])))
    res = subprocess.run([sys.executable, "-c", code, str(base), DTYPE, QUANT], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert ("loaded on cuda" if CUDA else "loaded on cpu") in res.stdout


def test_sampling_from_the_4bit_policy_gives_finite_decodable_replies(sim, base, measured):
    from rlhf_organic.policy.config import PolicySection
    from rlhf_organic.policy.model import build_policy

    policy = build_policy(str(base), PolicySection().lora, dtype=DTYPE, quantization=QUANT, log=quiet)
    assert policy.device.type == ("cuda" if CUDA else "cpu")
    assert_4bit_base(policy.peft)
    prompts = prompts_of(policy, load_reward_data(sim / "ds"), 6)
    assert_finite_logits(policy, prompts, measured)
    assert_sampling_works(policy, prompts, measured)


def test_reward_model_trains_as_qlora_moving_only_its_lora_and_head(sim, base, reward, tmp_path, measured):
    from rlhf_organic.reward.items import make_items
    from rlhf_organic.reward.model import build_reward_model
    from rlhf_organic.reward.spec import load_spec
    from rlhf_organic.reward.train import train

    metrics = json.loads((reward / "metrics.json").read_text())
    history = json.loads((reward / "history.json").read_text())
    assert metrics["train"]["steps"] == len(history) > 0
    assert all_finite(h["loss"] for h in history)
    assert all_finite(v for v in metrics["eval"]["pointwise"].values() if isinstance(v, float))
    measured["cli_losses"] = [round(h["loss"], 4) for h in history]
    # the same training through the python API, to compare the weights before and after
    spec = load_spec("smollm2", sets=[f"base={base}", f"quantization={QUANT}", f"dtype={DTYPE}", "max_length=64",
                                      "train.batch_size=8", "train.epochs=0.2"])
    model, tokenizer = build_reward_model(spec, tmp_path)
    assert_4bit_base(model)
    data, _ = split(load_reward_data(sim / "ds", sim / "trust"), 0.1, 0)
    before, before_4bit = snapshot(model), four_bit_states(model)
    run = train(model, make_items(tokenizer, data, spec, []), spec.train, spec.loss, tokenizer.pad_token_id)
    assert run["history"] and all_finite(h["loss"] for h in run["history"])
    changed = moved(model, before)
    assert changed and all("lora_" in n or n.startswith("head.") for n in changed), sorted(changed)[:5]
    assert any("lora_B" in n for n in changed) and any(n.startswith("head.") for n in changed)
    assert all(torch.isfinite(p).all() for p in model.trainable_parameters())
    assert_4bit_base(model, before_4bit)


def test_the_qlora_reward_model_rides_on_the_policy_base(sim, base, reward, measured):
    """attach_reward: the reward adapter + head on the policy's own (4-bit) base scores what the reward
    model scores on its own, and only the policy adapter stays trainable."""
    from rlhf_organic.reward.model import encode, load_reward_model
    from rlhf_organic.reward.train import score

    policy, _ = policy_run(sim, section("kto", base), reward)
    assert policy.shares_reward_base
    assert_4bit_base(policy.peft)
    data = load_reward_data(sim / "ds")
    contexts, responses = list(data.point["context"][:8]), list(data.point["response"][:8])
    shared = policy.reward_scores(contexts, responses)
    model, tokenizer, meta = load_reward_model(reward)
    assert meta["quantization"] == QUANT
    alone = score(model, encode(tokenizer, contexts, responses, meta["max_length"]), tokenizer.pad_token_id)[0]
    assert np.isfinite(shared).all() and np.isfinite(alone).all()
    measured["max_abs_score_gap"] = float(np.abs(shared - alone).max())
    assert np.allclose(shared, alone, atol=1e-4 if not CUDA else 1e-3 + 0.02 * float(np.abs(alone).max()))
    assert all(".default." in n for n, p in policy.peft.named_parameters() if p.requires_grad)


# settings that give every method a few optimizer steps, and the generating ones a few rollouts
ONLINE = {"dpo": {"dpo": {"on_policy": {"contexts": 4, "n": 2}}},
          "cringe": {"cringe": {"iterations": 2, "contexts_per_iteration": 4}},
          "rejection_sampling": {"rejection_sampling": {"rounds": 2, "contexts_per_round": 4, "n": 3, "max_new_tokens": 8}},
          "ppo": {"ppo": {"rounds": 2, "contexts_per_round": 4, "minibatch_size": 2, "ppo_epochs": 1, "max_new_tokens": 8,
                          "target_kl": None}}}
# RLOO, GRPO, online DPO: 2 rounds of 4 contexts x 2 replies, 2 epochs in minibatches (the ratio and clip path)
GROUPS = {"rounds": 2, "contexts_per_round": 4, "k": 2, "epochs": 2, "minibatch_size": 4, "max_new_tokens": 8}
ONLINE |= {"rloo": {"rloo": GROUPS}, "grpo": {"grpo": GROUPS}, "online_dpo": {"online_dpo": {**GROUPS, "min_gap": 0.0}}}


@pytest.mark.parametrize("method", ["dpo", "kto", "cringe", "rejection_sampling", "ppo", "rloo", "grpo", "online_dpo"])
def test_each_method_moves_only_the_policy_lora_with_finite_values(sim, base, reward, method, measured):
    """A few steps of each method on the 4-bit base with the shared QLoRA reward model: finite losses,
    scores and weights (training stops on a NaN loss or gradient norm: ``train.on_nonfinite: stop``), and
    only the policy's LoRA weights (and PPO's value head) move; the 4-bit bytes stay the same."""
    policy, run = policy_run(sim, section(method, base, **ONLINE.get(method, {})), reward)
    before, before_4bit = snapshot(policy.peft), four_bit_states(policy.peft)
    result = METHODS[method].train(run)
    history = result["history"]
    measured["losses"] = [round(h["loss"], 4) for h in history]
    assert history and all_finite(h["loss"] for h in history)
    for record in result.get("rounds", []):  # generated replies' reward scores, KL to the reference
        assert all_finite(v for v in record.values() if isinstance(v, float)), record
    changed = moved(policy.peft, before)
    assert changed and all("lora_" in n and ".default." in n for n in changed), sorted(changed)[:5]
    assert any("lora_B" in n for n in changed)
    assert all(torch.isfinite(p).all() for p in policy.trainable_parameters())
    assert (policy.value_head is not None and policy.value_head.weight.abs().sum() > 0) == (method == "ppo")
    assert_4bit_base(policy.peft, before_4bit)


PHRASE = "Thank you, I am glad to help with that."
WORDS = "apple river seven blue quiet train metal paper window cloud stone music".split()


def toy_data(n: int = 32, seed: int = 0) -> RewardData:
    """Every liked / chosen reply is PHRASE, every disliked / rejected one six random words."""
    rng = np.random.default_rng(seed)
    contexts = [[{"role": "user", "content": f"Tell me about the {WORDS[i % len(WORDS)]}, number {i}."}] for i in range(n)]
    junk = [" ".join(rng.choice(WORDS, 6)) for _ in range(n)]
    point = pd.DataFrame({"example_id": [f"e{i}" for i in range(2 * n)], "conversation_id": [f"c{i % n}" for i in range(2 * n)],
                          "user_id": "u0", "context": contexts + contexts, "response": [PHRASE] * n + junk,
                          "thumbs": [1] * n + [-1] * n, "dislike_reason": None, "label": np.r_[np.ones(n), np.zeros(n)].astype(np.float32),
                          "weight": 1.0})
    pairs = pd.DataFrame({"preference_id": [f"p{i}" for i in range(n)], "user_id": "u0", "context": contexts,
                          "chosen": PHRASE, "rejected": junk, "weight": 1.0})
    return RewardData(point, pairs)


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_loss_falls_on_a_learnable_toy(sim, base, method, measured):
    """32 steps at the default learning rate on data where the good reply is always the same phrase."""
    sets = {"train": {"batch_size": 4 if method == "dpo" else 8, "epochs": 4}}
    if method == "dpo":
        sets["dpo"] = {"pairs": ["preferences"]}
    policy, run = policy_run(sim, section(method, base, **sets), data=toy_data())
    history = METHODS[method].train(run)["history"]
    losses = [h["loss"] for h in history]
    measured["losses"] = [round(v, 4) for v in losses]
    assert len(losses) == 32 and all_finite(losses)
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    assert last < 0.8 * first, f"{method} loss {first:.4f} -> {last:.4f} over {len(losses)} steps"


def test_policy_train_cli_on_the_4bit_base_with_the_shared_reward(sim, base, reward, tmp_path, measured):
    out = tmp_path / "policy"
    sets = [f"base={base}", f"quantization={QUANT}", f"dtype={DTYPE}", "train.batch_size=4", "train.max_items=8",
            "eval.contexts=4", "eval.sampling.max_new_tokens=8", "max_prompt_length=48", "max_completion_length=16"]
    invoke("policy", "train", sim / "ds", "--method", "kto", "--trust", sim / "trust", "--reward", reward, "--out", out, "-q",
           *[a for s in sets for a in ("--set", s)])
    metrics = json.loads((out / "metrics.json").read_text())
    measured["metrics"] = {"train": metrics["train"], "eval": metrics["eval"]}
    assert metrics["reward_model_base"] == "shared" and metrics["train"]["steps"] == 2
    assert all_finite([metrics["train"]["final_loss"], metrics["eval"]["kl_to_reference"], *metrics["eval"]["reward"].values()])
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and (out / "samples.md").is_file()


@pytest.fixture(scope="module")
def exported(sim, base, tmp_path_factory):
    """A policy trained a few DPO steps with its LoRA weights then pushed far from zero (so the adapter
    changes the log-probs well beyond rounding), its log-probs and the base's, saved as the stage saves
    it; then the merged export, whose exception (if any) is kept for its own test."""
    from rlhf_organic.policy.stage import export_merged, save_policy

    folder = tmp_path_factory.mktemp("export")
    sec = section("dpo", base, train={"batch_size": 4, "max_items": 8})
    policy, run = policy_run(sim, sec)
    METHODS["dpo"].train(run)
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in policy.peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    data = load_reward_data(sim / "ds")
    prompts = prompts_of(policy, data, 6)
    completions = run.completions(list(data.point["response"][:6]))
    with torch.no_grad():
        live = policy.sequence_logps(prompts, completions).float().cpu()
        reference = policy.sequence_logps(prompts, completions, reference=True).float().cpu()
    save_policy(policy, sec, folder, base_in_folder=False)
    try:
        export_merged(policy, folder / "merged", folder / "adapter", sec.dtype)
        error = None
    except Exception as exc:  # noqa: BLE001 - reported by test_merged_export_matches_the_adapter
        error = exc
    del policy, run
    gc.collect()
    return {"folder": folder, "section": sec, "prompts": prompts, "completions": completions, "live": live,
            "reference": reference, "merge_error": error}


def logps_of(model, e) -> torch.Tensor:
    from rlhf_organic.policy.model import completion_logps
    from rlhf_organic.sequences import batch_sequences

    device = next(model.parameters()).device
    ids, mask, comp = batch_sequences(e["prompts"], e["completions"], 0, device)
    with torch.no_grad():
        return completion_logps(model(input_ids=ids, attention_mask=mask).logits, ids, comp).float().cpu()


def close_to_live(got: torch.Tensor, e: dict, row: dict, name: str, loose: bool) -> None:
    """``got`` matches the live policy's summed log-probs: to rounding, or (``loose``: a base loaded
    otherwise than the one trained on, e.g. full precision instead of 4-bit) well inside the adapter's effect."""
    effect = float((e["live"] - e["reference"]).abs().mean())
    gap = float((got - e["live"]).abs().mean())
    row[name] = {"mean_abs_gap": gap, "adapter_effect": effect}
    assert torch.isfinite(got).all()
    assert effect > 0.5, f"the adapter hardly changes the log-probs ({effect:.3f}): the comparison shows nothing"
    limit = 0.25 * effect if (loose and CUDA) else (0.05 if CUDA else 1e-3)
    assert gap < limit, f"{name}: mean |log-prob gap| {gap:.4f} (adapter effect {effect:.3f}, limit {limit:.4f})"


def test_saved_adapter_reloads_to_the_same_logps(exported, base, measured):
    from rlhf_organic.policy.model import build_policy
    from rlhf_organic.policy.stage import load_policy

    e, sec = exported, exported["section"]
    # on the base loaded as in training (4-bit on CUDA): the same log-probs
    again = build_policy(str(base), sec.lora, dtype=DTYPE, quantization=QUANT, adapter=e["folder"] / "adapter", log=quiet)
    assert_4bit_base(again.peft)
    with torch.no_grad():
        close_to_live(again.sequence_logps(e["prompts"], e["completions"]).float().cpu(), e, measured, "reloaded", loose=False)
    del again
    # the project's loader: on a GPU the base quantized as trained, so to rounding
    model, _ = load_policy(e["folder"])
    close_to_live(logps_of(model, e), e, measured, "load_policy", loose=False)


# ---- realistic depth: the NaN found at 0.8B (docs: the GPU check of 2026-12-04) ---------------------


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """recipes/quickstart_tiny.yaml's data (realistic preset, 300 users, seed 0, combined trust) and a
    random-init model of RLHF_GPU_REALISTIC_SIZE: where KTO and the reward model hit a NaN gradient norm."""
    if REALISTIC == "none":
        pytest.skip("RLHF_GPU_REALISTIC_SIZE=none")
    root = simulated(tmp_path_factory.mktemp("gpu_deep"), "--preset", "realistic", "--users", "300", "--seed", "0",
                     trust_args=("--scheme", "combined"))
    return root, random_base(root, REALISTIC)


@cuda_only
def test_realistic_depth_base_gives_finite_logits_and_samples(deep, measured):
    """PPO's first rollout on the 0.8B 4-bit base failed with 'probability tensor contains inf, nan'."""
    from rlhf_organic.policy.config import PolicySection
    from rlhf_organic.policy.model import build_policy

    root, model = deep
    policy = build_policy(str(model), PolicySection().lora, dtype=DTYPE, quantization=QUANT, log=quiet)
    assert_4bit_base(policy.peft)
    prompts = prompts_of(policy, load_reward_data(root / "ds"), 16, max_length=128)
    assert_finite_logits(policy, prompts, measured)
    assert_sampling_works(policy, prompts, measured, temperature=0.7, top_p=1.0, max_new_tokens=32)


@cuda_only
def test_realistic_depth_kto_has_no_nonfinite_step(deep, tmp_path, measured):
    """KTO stopped at step 11 of 32 with a NaN gradient norm (any precision, CPU too)."""
    root, model = deep
    invoke("policy", "train", root / "ds", "--method", "kto", "--trust", root / "trust", "--set", f"base={model}",
           "--set", f"quantization={QUANT}", "--set", f"dtype={DTYPE}", "--set", "train.max_items=256",
           "--set", "eval.contexts=0", "--out", tmp_path / "kto", "-q")
    history = json.loads((tmp_path / "kto" / "history.json").read_text())
    measured["losses"] = [round(h["loss"], 4) for h in history]
    assert len(history) == 32 and all_finite(h["loss"] for h in history)


@cuda_only
def test_realistic_depth_reward_qlora_has_no_nonfinite_step(deep, tmp_path, measured):
    """The reward model (smollm2's spec on this base) stopped at step 46 of 362 with a NaN gradient norm."""
    root, model = deep
    invoke("reward", "train", root / "ds", "--trust", root / "trust", *reward_args(model, 128), "--out", tmp_path / "rm", "-q")
    history = json.loads((tmp_path / "rm" / "history.json").read_text())
    measured["steps"], measured["final_loss"] = len(history), history[-1]["loss"]
    assert all_finite(h["loss"] for h in history)


# last: on a 4-bit base the merge is the step most likely to be unsupported, and -x stops at the first failure
def test_merged_export_matches_the_adapter(exported, measured):
    from rlhf_organic.models.loading import load_base

    e = exported
    if e["merge_error"] is not None:
        raise e["merge_error"]
    merged = load_base(str(e["folder"] / "merged"), causal_lm=True, dtype=DTYPE)  # hub kernels off when offline
    close_to_live(logps_of(merged, e), e, measured, "merged", loose=True)
