"""Benchmark: seconds per round and peak memory of rlhf_organic's ``rloo`` / ``grpo`` beside TRL's
``RLOOTrainer`` / ``GRPOTrainer``, on the same model and settings, each in a fresh process.

What it measures
----------------
For each method, two rows, each trainer in its own child process (``child.run_child``) so that its peak
RSS is its own:

- ``trl``: the project's installed trl (``trl.RLOOTrainer`` / ``trl.GRPOTrainer``) with a LoRA adapter
  (``peft_config``; r 8, alpha 16, all linear layers), so its reference is the base with the adapter off,
  as ours is. Its reward function is our reward model's score, as a Python function: the reward model
  (trained for a few steps on the same base by the project's reward stage, cached in ``--workdir``) is
  loaded beside the policy with its own copy of the base, as trl takes a reward *function*; the
  dataset carries each prompt's conversation so the function scores (context, reply) as ours does.
- ``ours``: ``rlhf_organic.policy.methods.rloo`` / ``grpo`` on one shared base (policy adapter, reference
  = adapter off, reward model = a second adapter + head).

Both: ``--contexts`` prompts per round, ``--k`` replies each (trl's ``num_generations``), every reply of a
round in one optimizer step (trl: ``per_device_train_batch_size`` = contexts x k, one gradient-accumulation
step, ``num_iterations`` 1; ours: ``epochs`` 1, ``minibatch_size`` = contexts x k), at most
``--new-tokens`` sampled at temperature 0.9, top_p 1, KL coefficient 0.05 (RLOO, in the reward) and 0.04
(GRPO, k3 in the loss), GRPO's rewards scaled by the group's std, fp32 on the CPU, dropout off.
trl's GRPO loss is its default ``dapo`` (a token mean over the step), which is ours. Timed: the training
call only (sampling, scoring, the no-gradient passes and the update), not loading; seconds per round is
that over the rounds, and the first round is shown on its own (it pays one-time warm-up). Peak RSS is the
child's ``ru_maxrss`` (imports and loading included); peak Pss is sampled beside it (``ppo_memory.py``
explains why). Target (the issue): ours at most as many seconds per round as trl.

The default model is SmolLM2-135M-Instruct (``reward_throughput.smollm2_folder``); ``--model tiny`` is a
2-layer toy Llama for smoke runs; ``--model PATH`` any local model folder.

Run (from the repository root; alone on the machine, the timings are the point)::

    .venv/bin/python bench/online_rl.py                  # smollm2, rloo and grpo, 6 rounds of 4 contexts x 4
    .venv/bin/python bench/online_rl.py --quick          # smoke run: tiny model, 2 rounds of 2 x 2, 8 tokens
    # other flags: --methods rloo,grpo, --rounds N, --contexts N, --k N, --new-tokens N, --only trl|ours,
    #              --threads N, --seed 0, --workdir DIR, --out PATH

Prints a Markdown table and writes ``bench/results/online_rl.json`` (settings, machine, per-row numbers
with the per-round times).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))

from child import limit_cpus, reply, run_child  # noqa: E402
from machine import machine_info  # noqa: E402
from ppo_memory import PeakMemory, memory_now_mb, read_contexts, reward_folder  # noqa: E402
from reward_throughput import make_pairs, smollm2_folder, tiny_folder  # noqa: E402

RESULTS = BENCH_DIR / "results" / "online_rl.json"
LORA = {"r": 8, "alpha": 16, "dropout": 0.0}
MAX_PROMPT = 256
TEMPERATURE = 0.9
LR = 1e-5  # both rows; the step time does not depend on it
KL = {"rloo": 0.05, "grpo": 0.04}  # trl's RLOO default and GRPO's DeepSeekMath value; ours default to the same
QUICK = {"model": "tiny", "rounds": 2, "contexts": 2, "k": 2, "new_tokens": 8}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def per_round(seconds: list[float]) -> dict:
    return {"round_seconds": [round(s, 3) for s in seconds], "first_round_seconds": seconds[0] if seconds else None,
            "later_round_seconds": sum(seconds[1:]) / len(seconds[1:]) if len(seconds) > 1 else None}


def worker_trl(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from rlhf_organic.reward.model import encode, load_reward_model
    from rlhf_organic.reward.train import score
    from rlhf_organic.sequences import prompt_text

    torch.manual_seed(spec["seed"])
    memory = PeakMemory().start()
    loaded_at = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    contexts = read_contexts(spec["pairs"], spec["rounds"] * spec["contexts"])
    dataset = Dataset.from_dict({"prompt": [prompt_text(tokenizer, c) for c in contexts],
                                 "context_json": [json.dumps(c) for c in contexts]})
    reward_model, reward_tokenizer, meta = load_reward_model(spec["reward"])

    def reward_model_score(prompts, completions, context_json, **_):
        """Our reward model's score of each (conversation, reply): the same numbers ours optimises."""
        sequences = encode(reward_tokenizer, [json.loads(c) for c in context_json], completions, meta["max_length"])
        return [float(s) for s in score(reward_model, sequences, reward_tokenizer.pad_token_id, 64)[0]]

    method, k, batch = spec["method"], spec["k"], spec["contexts"] * spec["k"]
    Config, Trainer = {"rloo": (RLOOConfig, RLOOTrainer), "grpo": (GRPOConfig, GRPOTrainer)}[method]
    extra = {"scale_rewards": "group", "loss_type": "dapo"} if method == "grpo" else {}
    args = Config(output_dir=spec["workdir"], per_device_train_batch_size=batch, gradient_accumulation_steps=1,
                  num_generations=k, max_completion_length=spec["new_tokens"], temperature=TEMPERATURE, top_p=1.0,
                  beta=KL[method], num_iterations=1, epsilon=0.2, learning_rate=LR, max_steps=spec["rounds"],
                  logging_steps=1, save_strategy="no", report_to=[], bf16=False, seed=spec["seed"], disable_dropout=True,
                  shuffle_dataset=False, **extra)
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], target_modules="all-linear",
                      task_type="CAUSAL_LM")
    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

    trainer = Trainer(model=model, reward_funcs=reward_model_score, args=args, train_dataset=dataset,
                      processing_class=tokenizer, peft_config=lora, callbacks=[Clock()])
    load_seconds = time.perf_counter() - loaded_at
    began = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - began
    memory.stop()
    marks = [began] + ends
    logs = [row for row in trainer.state.log_history if "loss" in row]
    return {"seconds": seconds, "rounds": len(ends), "seconds_per_round": seconds / max(1, len(ends)),
            "load_seconds": round(load_seconds, 2), **per_round([b - a for a, b in zip(marks, marks[1:])]),
            **memory.result(), "memory_at_end_mb": memory_now_mb(), "models": 2,
            "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
            "reply_tokens": [row.get("completions/mean_length") for row in logs],
            "reward": [row.get("reward") for row in logs]}


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
    method, n = spec["method"], spec["rounds"] * spec["contexts"]
    section = PolicySection.model_validate({
        "method": method, "base": spec["model"], "lora": LORA, "max_prompt_length": MAX_PROMPT, "train": {"lr": LR},
        method: {"rounds": spec["rounds"], "contexts_per_round": spec["contexts"], "k": spec["k"], "epochs": 1,
                 "minibatch_size": spec["contexts"] * spec["k"], "max_new_tokens": spec["new_tokens"],
                 "temperature": TEMPERATURE, "top_p": 1.0, "kl_coef": KL[method], "clip": 0.2, "reward_clip": None,
                 "generation_batch_size": spec["contexts"], "trust": "draw"},
    })
    memory = PeakMemory().start()
    loaded_at = time.perf_counter()
    policy = build_policy(section.base, section.lora, seed=spec["seed"], log=lambda m: None)
    if attach_reward(policy, spec["reward"], share_base=True, log=log) != "shared":
        raise RuntimeError("the reward model was not attached on the policy's base: the bench compares one shared base")
    load_seconds = time.perf_counter() - loaded_at
    contexts = read_contexts(spec["pairs"], n)
    # the prompts: the trl row's contexts, as thumbs of weight 1 (one user each, so every context is drawn alike)
    point = pd.DataFrame({
        "example_id": [f"e{i}" for i in range(n)], "conversation_id": [f"c{i}" for i in range(n)],
        "user_id": [f"u{i}" for i in range(n)], "context": contexts, "response": "", "thumbs": 1, "dislike_reason": None,
        "label": np.ones(n, np.float32), "weight": np.ones(n)})
    run = MethodRun(policy, section, RewardData(point, pd.DataFrame(columns=PAIR_COLUMNS + ["weight"])), seed=spec["seed"],
                    progress=False, log=lambda m: None)
    began = time.perf_counter()
    result = METHODS[method].train(run)
    seconds = time.perf_counter() - began
    memory.stop()
    rounds = result["rounds"]
    return {"seconds": seconds, "rounds": len(rounds), "seconds_per_round": seconds / max(1, len(rounds)),
            "load_seconds": round(load_seconds, 2), **per_round([r["sample_seconds"] + r["update_seconds"] for r in rounds]),
            **memory.result(), "memory_at_end_mb": memory_now_mb(), "models": 1,
            "trainable_parameters": sum(p.numel() for p in policy.trainable_parameters()),
            "reply_tokens": [r["reply_tokens"] for r in rounds], "reward": [r["score"] for r in rounds],
            "sample_seconds": [r["sample_seconds"] for r in rounds], "update_seconds": [r["update_seconds"] for r in rounds]}


WORKERS = {"trl": worker_trl, "ours": worker_ours}


def fmt(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def table(results: list[dict]) -> list[str]:
    lines = ["| method | trainer | s/round | first round s | later rounds s | reply tokens | peak RSS (MB) | peak Pss (MB) | "
             "s/round vs trl | peak RSS vs trl |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        base = next((b for b in results if b["method"] == r["method"] and b["kind"] == "trl"), None)
        tokens = [t for t in r.get("reply_tokens", []) if t is not None]
        lines.append(
            f"| {r['method']} | {r['kind']} | {r['seconds_per_round']:.2f} | {fmt(r.get('first_round_seconds'), '.2f')} | "
            f"{fmt(r.get('later_round_seconds'), '.2f')} | {fmt(sum(tokens) / len(tokens) if tokens else None, '.1f')} | "
            f"{r['peak_rss_mb']:,} | {fmt(r.get('peak_pss_mb'), ',')} | "
            f"{fmt(r['seconds_per_round'] / base['seconds_per_round'] if base else None, '.2f', 'x')} | "
            f"{fmt(r['peak_rss_mb'] / base['peak_rss_mb'] if base else None, '.2f', 'x')} |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="smollm2 (default), tiny, or a local model folder")
    parser.add_argument("--methods", default="rloo,grpo", help="comma-separated, of rloo, grpo")
    parser.add_argument("--rounds", type=int, default=6, help="rounds (trl: optimizer steps) per trainer")
    parser.add_argument("--contexts", type=int, default=4, help="prompts per round")
    parser.add_argument("--k", type=int, default=4, help="replies per prompt")
    parser.add_argument("--new-tokens", type=int, default=32, help="at most this many new tokens per reply")
    parser.add_argument("--quick", action="store_true", help="smoke run: " + ", ".join(f"{k} {v}" for k, v in QUICK.items()))
    parser.add_argument("--only", choices=sorted(WORKERS), help="run one trainer")
    parser.add_argument("--threads", type=int, help="torch / OpenMP threads per trainer (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rlhf_bench_online_rl"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        reply(WORKERS[args.worker](json.loads(args.spec)))
        return
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    methods = [m for m in args.methods.split(",") if m]
    if bad := [m for m in methods if m not in KL]:
        sys.exit(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(KL)}")
    limit_cpus()
    started = time.perf_counter()
    machine = machine_info("torch", "transformers", "trl", "peft", "accelerate")
    args.workdir.mkdir(parents=True, exist_ok=True)
    pairs = make_pairs(args.workdir, max(64, args.rounds * args.contexts), args.seed)
    model = {"smollm2": smollm2_folder, "tiny": lambda: tiny_folder(args.workdir, pairs)}.get(
        args.model, lambda: Path(args.model).resolve())()
    reward = reward_folder(args.workdir, model, args.threads)  # ppo_memory's: a few steps of the reward stage, cached
    results = []
    for method in methods:
        for kind in [k for k in ("trl", "ours") if args.only in (None, k)]:
            spec = {"method": method, "model": str(model), "reward": str(reward), "pairs": str(pairs), "rounds": args.rounds,
                    "contexts": args.contexts, "k": args.k, "new_tokens": args.new_tokens, "seed": args.seed,
                    "workdir": str(args.workdir / f"{method}_{kind}")}
            log(f"{method}, {kind} ...")
            answer = run_child(Path(__file__).resolve(), ["--worker", kind, "--spec", json.dumps(spec)], threads=args.threads)
            answer.update(method=method, kind=kind)
            results.append(answer)
            log(f"  {answer['seconds_per_round']:.2f} s per round, peak RSS {answer['peak_rss_mb']:,} MB")
    verdict = {}
    for method in methods:
        pair = {r["kind"]: r for r in results if r["method"] == method}
        if len(pair) == 2:
            ratio = pair["ours"]["seconds_per_round"] / pair["trl"]["seconds_per_round"]
            verdict[method] = {"time_ratio": round(ratio, 3), "time_target_met": ratio <= 1.0,
                               "rss_ratio": round(pair["ours"]["peak_rss_mb"] / pair["trl"]["peak_rss_mb"], 3)}
    lines = [f"Model {args.model} ({model}), {args.rounds} rounds of {args.contexts} prompts x {args.k} replies, up to "
             f"{args.new_tokens} new tokens, one optimizer step per round, fp32, {machine['cores_used']} of "
             f"{machine['cores_online']} cores{f', {args.threads} thread(s)' if args.threads else ''}, {machine['cpu_model']}, "
             f"trl {machine.get('trl')}", "", *table(results), ""]
    lines += [f"{m}: ours {v['time_ratio']:.2f}x trl's seconds per round (target at most 1x: "
              f"{'met' if v['time_target_met'] else 'NOT met'}), {v['rss_ratio']:.2f}x its peak RSS." for m, v in verdict.items()]
    loads = [f"{r['method']} {r['kind']}: {r['loadavg_1min'][0]:.1f} -> {r['loadavg_1min'][1]:.1f}" for r in results]
    lines += ["", "1-minute load average before -> after each row (other work on the machine slows a row): " + "; ".join(loads)]
    print("\n".join(lines))
    report = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("worker", "spec")},
              "model_folder": str(model), "lora": LORA, "temperature": TEMPERATURE, "kl_coef": KL, "lr": LR, "machine": machine,
              "results": results, "verdict": verdict, "seconds": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
