"""Benchmark: QLoRA training on a CUDA GPU, rlhf_organic beside TRL + peft (DPO, KTO, reward model, one PPO round).

Same base model, same synthetic data, same LoRA (r 16, alpha 32, dropout 0, all linear layers) on a
4-bit NF4 base (double quantization, bf16 compute); one epoch; each row in its own fresh process, so
its peak GPU memory and its load time are its own. The base is a random-init Llama of a realistic
shape built from a config (``rlhf_organic.models.random_init``, sizes tiny to 8b), around a tokenizer
folder (``--tokenizer``, e.g. SmolLM2's) or a BPE tokenizer trained on the spot on the synthetic texts.
No download, no model hub. Rows:

- ``trl_dpo`` / ``trl_dpo_nockpt``: TRL ``DPOTrainer`` with its defaults (gradient checkpointing on) / off;
- ``ours_dpo``: ``rlhf_organic.policy.methods.dpo`` (reference log-probs precomputed, its default);
- ``trl_kto`` / ``trl_kto_nockpt`` and ``ours_kto``: the same for KTO (``policy.methods.kto``);
- ``trl_reward`` / ``trl_reward_nockpt``: TRL ``RewardTrainer`` on a 4-bit ``AutoModelForSequenceClassification``
  with a SEQ_CLS LoRA; ``ours_reward``: ``rlhf_organic.reward.train`` (pairs only, max length 512);
- ``ours_ppo``: one round of ``policy.methods.ppo`` (64 contexts, 64 new tokens) with a fresh reward model
  attached as a second adapter on the same base. TRL 1.16 has no PPO trainer (removed after 1.12): no TRL row.

Timed (``seconds``): from the tokenised-text data to the end of the epoch, including tokenisation, the
LoRA wrapping TRL does in its constructor and our precomputed reference pass, not model loading
(``load_s``). ``tokens``: prompt + completion tokens of the sequences trained on in the epoch, counted from
each trainer's own tokenisation the same way (DPO: prompt twice + chosen + rejected; KTO: prompt +
completion, not the no-gradient KL sequences both run; reward: chosen + rejected sequences; PPO: prompt +
generated reply of each rollout, and ``seconds`` is the whole round: generation, scoring, updates).
Peak memory: ``torch.cuda.max_memory_allocated`` and ``max_memory_reserved`` after
``reset_peak_memory_stats`` at the end of loading; with ``--cpu-dry-run`` (no CUDA: fp32, no
quantization, size tiny) the process's peak RSS instead.

    python bench/gpu_qlora.py [--size 0.8b] [--tokenizer DIR] [--items 256] [--batch 8] [--rows trl_dpo,ours_dpo]
    python bench/gpu_qlora.py --cpu-dry-run --items 16 --batch 4      # the whole script on CPU, a few minutes

Prints a table and writes ``bench/results/gpu_qlora.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))

from child import reply, run_child  # noqa: E402
from machine import machine_info  # noqa: E402

RESULTS = BENCH_DIR / "results" / "gpu_qlora.json"
LORA = {"r": 16, "alpha": 32, "dropout": 0.0}
LR, BETA = 5e-5, 0.1
REWARD_MAX_LENGTH = 512
# transformers 5.25 fetches hub kernels on CUDA by default, which fails offline; the model hub is never used here
CHILD_ENV = {"USE_HUB_KERNELS": "NO", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

# row -> (worker, method, options, label)
ROWS = {
    "trl_dpo": ("trl", "dpo", {"checkpointing": True}, "TRL DPOTrainer (defaults: checkpointing)"),
    "trl_dpo_nockpt": ("trl", "dpo", {"checkpointing": False}, "TRL DPOTrainer, no checkpointing"),
    "ours_dpo": ("ours", "dpo", {}, "ours dpo (precomputed reference)"),
    "ours_dpo_ckpt": ("ours", "dpo", {"checkpointing": True}, "ours dpo, gradient checkpointing"),
    "trl_kto": ("trl", "kto", {"checkpointing": True}, "TRL KTOTrainer (defaults: checkpointing)"),
    "trl_kto_nockpt": ("trl", "kto", {"checkpointing": False}, "TRL KTOTrainer, no checkpointing"),
    "ours_kto": ("ours", "kto", {}, "ours kto (precomputed reference)"),
    "ours_kto_ckpt": ("ours", "kto", {"checkpointing": True}, "ours kto, gradient checkpointing"),
    "trl_reward": ("trl", "reward", {"checkpointing": True}, "TRL RewardTrainer (defaults: checkpointing)"),
    "trl_reward_nockpt": ("trl", "reward", {"checkpointing": False}, "TRL RewardTrainer, no checkpointing"),
    "ours_reward": ("ours", "reward", {}, "ours reward model (pairs)"),
    "ours_ppo": ("ours", "ppo", {}, "ours ppo, one round"),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- synthetic data ------------------------------------------------------------------------------

WORDS = """the a an and but or so because if when while after before then than of in on at by for with
from into over under about between through during without again also only just very really quite still
even often never always sometimes I you he she we they it this that these those my your our their his her
is are was were be been being have has had do does did can could will would should may might must
say said tell told ask asked think thought know knew see saw look looked make made take took give gave
find found go went come came walk run read write wrote play work help try tried keep kept start call
time day night week year morning evening home house room door window garden street city town river
road car train book letter story song music film picture game team school class teacher friend family
mother father child children people man woman dog cat bird tree flower water food bread coffee tea
table chair bed kitchen market shop money job idea question answer problem reason way place world
good new old great little small big long short high low early late young important different same
right wrong easy hard happy sad warm cold bright dark quiet loud fresh clean full empty sure ready
first last next other another every each many much more most some any few all both""".split()


def synthetic_text(rng: random.Random, words: int) -> str:
    """About ``words`` random English words (0.8x to 1.2x), in capitalised sentences of 5 to 14 words."""
    target = rng.randint(int(words * 0.8), int(words * 1.2))
    sentences, count = [], 0
    while count < target:
        n = min(rng.randint(5, 14), target - count)
        sentence = " ".join(rng.choice(WORDS) for _ in range(n))
        sentences.append(sentence[0].upper() + sentence[1:] + rng.choice(".....?!"))
        count += n
    return " ".join(sentences)


def make_data(path: Path, items: int, prompt_words: int, reply_words: int, seed: int) -> Path:
    """``items`` JSON lines of {context: one user turn, chosen, rejected}, seeded."""
    if path.is_file():
        return path
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(items):
            f.write(json.dumps({"context": synthetic_text(rng, prompt_words), "chosen": synthetic_text(rng, reply_words),
                                "rejected": synthetic_text(rng, reply_words)}) + "\n")
    return path


def read_data(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def thumbs(rows: list[dict]) -> list[tuple[str, str, bool]]:
    """The KTO items of the same data: one per row, (context, reply, liked), alternating chosen (liked) and rejected."""
    return [(r["context"], r["chosen"] if i % 2 == 0 else r["rejected"], i % 2 == 0) for i, r in enumerate(rows)]


# ---- in the child: measuring --------------------------------------------------------------------


def preimport(cpu: bool) -> None:
    """Import what loading and wrapping a model pull in (peft, the Auto classes, bitsandbytes) before the load clock
    starts, in every row alike: import time is not load time (peft alone takes seconds, more on a busy machine)."""
    import peft  # noqa: F401
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification  # noqa: F401
    from transformers.models.llama import modeling_llama  # noqa: F401

    if not cpu:
        import bitsandbytes  # noqa: F401


class Meter:
    """Load time, model footprint, training time and peak memory of one row (GPU, or peak RSS on a CPU dry run)."""

    def __init__(self, cpu: bool):
        import torch

        self.cpu, self.torch = cpu, torch
        preimport(cpu)
        if not cpu and not torch.cuda.is_available():
            raise RuntimeError("no CUDA GPU visible; use --cpu-dry-run to test on CPU")
        self.answer: dict = {"device": "cpu" if cpu else torch.cuda.get_device_name(0),
                             "cuda": None if cpu else torch.version.cuda}
        self._t = time.perf_counter()

    def _sync(self):
        if not self.cpu:
            self.torch.cuda.synchronize()

    def lap(self, key: str) -> None:
        """Record the seconds since the clock started under ``key`` and restart it."""
        self._sync()
        self.answer[key] = time.perf_counter() - self._t
        self._t = time.perf_counter()

    def loaded(self) -> None:
        """Loading done: record its time and what the model holds, reset the peaks, start the training clock."""
        self.lap("load_s")
        if not self.cpu:
            self.answer["model_gib"] = self.torch.cuda.memory_allocated() / 2**30
            self.torch.cuda.reset_peak_memory_stats()
        self._t = time.perf_counter()

    def trained(self) -> None:
        self._sync()
        self.answer["seconds"] = time.perf_counter() - self._t
        self.answer.update(self.peaks())

    def peaks(self) -> dict:
        if self.cpu:
            import resource

            return {"peak_alloc_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "peak_reserved_gib": None}
        return {"peak_alloc_gib": self.torch.cuda.max_memory_allocated() / 2**30,
                "peak_reserved_gib": self.torch.cuda.max_memory_reserved() / 2**30}


def finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def losses_summary(losses: list[float], nan_steps: int) -> dict:
    """First and last step loss (None when not finite) and how many steps had a NaN / infinite loss or gradient."""
    return {"loss_first": finite(losses[0]) if losses else None, "loss_last": finite(losses[-1]) if losses else None,
            "nan_steps": nan_steps}


# ---- TRL rows ------------------------------------------------------------------------------------


def trl_model(spec: dict, sequence_classification: bool = False):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, BitsAndBytesConfig

    kwargs = {"use_kernels": False}
    if not spec["cpu"]:
        kwargs.update(dtype=torch.bfloat16, device_map={"": 0}, quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16))
    if sequence_classification:
        return AutoModelForSequenceClassification.from_pretrained(spec["model"], num_labels=1, **kwargs)
    return AutoModelForCausalLM.from_pretrained(spec["model"], **kwargs)


def trl_common(spec: dict, row_dir: str) -> dict:
    return dict(output_dir=row_dir, per_device_train_batch_size=spec["batch"], num_train_epochs=1, learning_rate=LR,
                bf16=not spec["cpu"], use_cpu=spec["cpu"], report_to=[], save_strategy="no", logging_steps=1,
                disable_tqdm=True, gradient_checkpointing=spec["checkpointing"], dataloader_num_workers=0, seed=0)


def worker_trl(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer, RewardConfig, RewardTrainer

    method = spec["method"]
    meter = Meter(spec["cpu"])  # imports done: the clock starts here
    torch.manual_seed(0)
    rows = read_data(spec["data"])
    user = lambda text: [{"role": "user", "content": text}]  # noqa: E731
    bot = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = trl_model(spec, sequence_classification=method == "reward")
    if method == "reward":
        model.config.pad_token_id = tokenizer.pad_token_id
    meter.loaded()
    lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], target_modules="all-linear",
                      task_type="SEQ_CLS" if method == "reward" else "CAUSAL_LM")
    common = trl_common(spec, spec["workdir"])
    if method == "dpo":
        data = Dataset.from_list([{"prompt": user(r["context"]), "chosen": bot(r["chosen"]), "rejected": bot(r["rejected"])}
                                  for r in rows])
        trainer = DPOTrainer(model=model, args=DPOConfig(**common, beta=BETA, max_length=None), train_dataset=data,
                             processing_class=tokenizer, peft_config=lora)
        count = lambda r: 2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"])  # noqa: E731
    elif method == "kto":
        data = Dataset.from_list([{"prompt": user(c), "completion": bot(reply_), "label": liked}
                                  for c, reply_, liked in thumbs(rows)])
        trainer = KTOTrainer(model=model, args=KTOConfig(**common, beta=BETA, max_length=None), train_dataset=data,
                             processing_class=tokenizer, peft_config=lora)
        count = lambda r: len(r["prompt_ids"]) + len(r["completion_ids"])  # noqa: E731
    else:
        data = Dataset.from_list([{"chosen": user(r["context"]) + bot(r["chosen"]),
                                   "rejected": user(r["context"]) + bot(r["rejected"])} for r in rows])
        trainer = RewardTrainer(model=model, args=RewardConfig(**common, max_length=REWARD_MAX_LENGTH), train_dataset=data,
                                processing_class=tokenizer, peft_config=lora)
        count = lambda r: len(r["chosen_ids"]) + len(r["rejected_ids"])  # noqa: E731
    trainer.train()
    meter.trained()
    steps = [h for h in trainer.state.log_history if "loss" in h]
    bad = sum(1 for h in steps if not (math.isfinite(h["loss"]) and math.isfinite(h.get("grad_norm", 0.0))))
    return {**meter.answer, "items": len(rows), "steps": trainer.state.global_step,
            "tokens": int(sum(count(r) for r in trainer.train_dataset)),
            "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
            **losses_summary([h["loss"] for h in steps], bad)}


# ---- our rows ------------------------------------------------------------------------------------


def precision(spec: dict) -> dict:
    return {"dtype": "float32", "quantization": "none"} if spec["cpu"] else {"dtype": "bfloat16", "quantization": "4bit"}


def policy_section(spec: dict, method: str, extra: dict):
    from rlhf_organic.policy.config import PolicySection

    return PolicySection.model_validate({
        "method": method, "base": spec["model"], **precision(spec), "lora": {**LORA, "target_modules": "all-linear"},
        "max_prompt_length": 1024, "max_completion_length": 1024, "weighted": False,
        "train": {"epochs": 1, "batch_size": spec["batch"], "lr": LR, "warmup_ratio": 0.0, "on_nonfinite": "skip",
                  "gradient_checkpointing": bool(spec.get("checkpointing"))},
        **extra})


def reward_spec(spec: dict):
    from rlhf_organic.reward.spec import RewardSpec

    return RewardSpec.model_validate({
        "base": spec["model"], **precision(spec), "signals": ["preferences"], "head": {"pooling": "last"},
        "loss": {"pointwise": 0.0, "pairwise": 1.0}, "lora": {**LORA, "target_modules": "all-linear"},
        "max_length": REWARD_MAX_LENGTH,
        "train": {"epochs": 1, "batch_size": spec["batch"], "lr": LR, "warmup_ratio": 0.0, "on_nonfinite": "skip"}})


def frames(rows: list[dict]):
    """(thumbs, A/B choices) as the policy methods read them (RewardData's point and pairs), weights 1."""
    import numpy as np
    import pandas as pd

    point = pd.DataFrame([{"example_id": f"e{i}", "conversation_id": f"c{i}", "user_id": "u",
                           "context": [{"role": "user", "content": c}], "response": reply_, "label": float(liked),
                           "weight": 1.0} for i, (c, reply_, liked) in enumerate(thumbs(rows))])
    pairs = pd.DataFrame({"preference_id": [f"p{i}" for i in range(len(rows))], "user_id": "u",
                          "context": [[{"role": "user", "content": r["context"]}] for r in rows],
                          "chosen": [r["chosen"] for r in rows], "rejected": [r["rejected"] for r in rows],
                          "weight": np.ones(len(rows))})
    return point, pairs


def history_summary(history: list[dict]) -> dict:
    bad = sum(1 for h in history if "skipped" in h or not math.isfinite(h["loss"]))
    return losses_summary([h["loss"] for h in history], bad)


def worker_ours(spec: dict) -> dict:
    import pandas as pd
    import torch

    from rlhf_organic.policy.methods import dpo, kto, ppo
    from rlhf_organic.policy.model import attach_reward, build_policy
    from rlhf_organic.policy.train import MethodRun
    from rlhf_organic.reward.data import RewardData
    from rlhf_organic.reward.model import build_reward_model, save_reward_model

    method = spec["method"]
    rows = read_data(spec["data"])
    if method == "reward":
        return ours_reward(spec, rows)
    point, pairs = frames(rows)
    extra = {"dpo": {"beta": BETA, "pairs": ["preferences"]}, "kto": {"beta": BETA},
             "ppo": {"rounds": 1, "contexts_per_round": spec["ppo_contexts"], "max_new_tokens": spec["ppo_new_tokens"],
                     "minibatch_size": spec["batch"]}}[method]
    section = policy_section(spec, method, {method: extra})
    meter = Meter(spec["cpu"])  # imports done: the clock starts here
    if method == "ppo":  # a fresh reward model (adapter + head) on the same base, saved, then attached to the policy
        rspec = reward_spec(spec)
        reward_dir = Path(spec["workdir"]) / "reward_model"
        model, tokenizer = build_reward_model(rspec, reward_dir)
        save_reward_model(model, tokenizer, rspec, [], reward_dir)
        del model
        gc.collect()
        if not spec["cpu"]:
            torch.cuda.empty_cache()
        meter.lap("reward_setup_s")
    policy = build_policy(section.base, section.lora, dtype=section.dtype, quantization=section.quantization, log=log)
    if method == "ppo":
        meter.answer["reward_attached"] = attach_reward(policy, reward_dir, log=log)
    meter.loaded()
    torch.manual_seed(0)
    data = RewardData(point, pd.DataFrame()) if method == "kto" else RewardData(pd.DataFrame(), pairs)
    run = MethodRun(policy, section, data, progress=False, log=log)
    if method == "dpo":
        result = dpo.train(run)
        meter.trained()
        p, c, r = run.prompts(pairs["context"]), run.completions(pairs["chosen"]), run.completions(pairs["rejected"])
        tokens = sum(2 * len(a) + len(b) + len(d) for a, b, d in zip(p, c, r))
    elif method == "kto":
        result = kto.train(run)
        meter.trained()
        tokens = sum(len(a) + len(b) for a, b in zip(run.prompts(point["context"]), run.completions(point["response"])))
    else:
        batches = []
        rollout = ppo.rollout

        def recorded(*args, **kwargs):  # keep each round's rollouts, to count their tokens
            batches.append(rollout(*args, **kwargs))
            return batches[-1]

        ppo.rollout = recorded
        result = ppo.train(run)
        meter.trained()
        tokens = sum(len(a) + len(b) for batch in batches for a, b in zip(batch["prompts"], batch["completions"]))
        meter.answer.update(rounds=result["rounds"], items=len(batches[0]["prompts"]) if batches else 0)
    meter.answer.setdefault("items", result["items"])
    return {**meter.answer, "steps": len(result["history"]), "tokens": int(tokens),
            "trainable_params": sum(p.numel() for p in policy.trainable_parameters()), **history_summary(result["history"])}


def ours_reward(spec: dict, rows: list[dict]) -> dict:
    import numpy as np
    import torch

    from rlhf_organic.reward.model import build_reward_model, encode
    from rlhf_organic.reward.train import Items, train

    rspec = reward_spec(spec)
    meter = Meter(spec["cpu"])  # imports done: the clock starts here
    model, tokenizer = build_reward_model(rspec, Path(spec["workdir"]))
    meter.loaded()
    torch.manual_seed(0)
    contexts = [[{"role": "user", "content": r["context"]}] for r in rows]
    items = Items(chosen_ids=encode(tokenizer, contexts, [r["chosen"] for r in rows], rspec.max_length),
                  rejected_ids=encode(tokenizer, contexts, [r["rejected"] for r in rows], rspec.max_length),
                  pair_weight=np.ones(len(rows)))
    result = train(model, items, rspec.train, rspec.loss, tokenizer.pad_token_id)
    meter.trained()
    tokens = sum(len(c) + len(r) for c, r in zip(items.chosen_ids, items.rejected_ids))
    return {**meter.answer, "items": len(rows), "steps": result["steps"], "tokens": int(tokens),
            "trainable_params": sum(p.numel() for p in model.trainable_parameters()), **history_summary(result["history"])}


# ---- the model -----------------------------------------------------------------------------------


def worker_build(spec: dict) -> dict:
    """Save a random-init Llama of ``size`` with the given tokenizer folder, or one trained on the data's texts."""
    import torch
    from transformers import AutoTokenizer

    from rlhf_organic.models.random_init import save_random_llama
    from rlhf_organic.models.tiny import train_tokenizer

    started = time.perf_counter()
    if spec["tokenizer"]:
        tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])
    else:
        rows = read_data(spec["data"])
        tokenizer = train_tokenizer([t for r in rows for t in (r["context"], r["chosen"], r["rejected"])])
    device = "cpu" if spec["cpu"] or not torch.cuda.is_available() else "cuda"
    folder = save_random_llama(spec["folder"], tokenizer, spec["size"], device=device)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    weights = sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))
    return {"folder": str(folder), "size": spec["size"], "tokenizer_vocab": len(tokenizer), "vocab_size": config.vocab_size,
            "hidden": config.hidden_size, "layers": config.num_hidden_layers, "intermediate": config.intermediate_size,
            "safetensors_gib": weights / 2**30, "build_seconds": time.perf_counter() - started}


WORKERS = {"trl": worker_trl, "ours": worker_ours, "build": worker_build}


def run_worker(kind: str, spec: dict, timeout: float | None) -> dict:
    env = dict(CHILD_ENV)
    if spec.get("cpu"):
        env["CUDA_VISIBLE_DEVICES"] = ""
    return run_child(Path(__file__).resolve(), ["--worker", kind, "--spec", json.dumps(spec)], timeout=timeout, env=env,
                     check=False)


def model_folder(args, data: Path, workdir: Path, timeout: float | None) -> tuple[Path, dict]:
    """The model to train: ``--model-dir`` as it is when it holds one, else built into it (or into the workdir,
    reused while the size, tokenizer and data are the same)."""
    if args.model_dir is not None and (args.model_dir / "config.json").is_file():
        marker = args.model_dir / "bench_model.json"
        built = json.loads(marker.read_text())["model"] if marker.is_file() else {"folder": str(args.model_dir)}
        return args.model_dir, {**built, "reused": True}
    tok = f"tok-{Path(args.tokenizer).resolve().name}" if args.tokenizer else f"trained-{data.stem}"
    folder = args.model_dir or workdir / f"model_{args.size}_{tok}"
    wanted = {"size": args.size, "tokenizer": str(Path(args.tokenizer).resolve()) if args.tokenizer else None,
              "data": None if args.tokenizer else data.name}
    marker = folder / "bench_model.json"
    if marker.is_file() and json.loads(marker.read_text()).get("settings") == wanted:
        return folder, {**json.loads(marker.read_text())["model"], "reused": True}
    log(f"building a random-init {args.size} Llama in {folder} ...")
    answer = run_worker("build", {"folder": str(folder), "size": args.size, "tokenizer": wanted["tokenizer"],
                                  "data": str(data), "cpu": args.cpu_dry_run}, timeout)
    if "error" in answer:
        sys.exit(f"building the model failed:\n{answer['error']}")
    marker.write_text(json.dumps({"settings": wanted, "model": answer}, indent=2) + "\n")
    return folder, answer


# ---- the report ----------------------------------------------------------------------------------


def ratio(value, base) -> str:
    return f"{value / base:.2f}x" if value is not None and base else "n/a"


def gib(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(results: list[dict], cpu: bool) -> list[str]:
    memory = "peak RSS (GiB)" if cpu else "peak alloc (GiB)"
    lines = [f"| row | seconds | load s | steps | tokens | tokens/s | {memory} | peak reserved (GiB) | final loss | NaN steps "
             "| speed vs TRL nockpt | memory vs TRL nockpt |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by_row = {r["row"]: r for r in results}
    for r in results:
        if "error" in r or "timed_out" in r:
            why = "timed out" if "timed_out" in r else r["error"].strip().splitlines()[-1].strip()[:120] if r["error"].strip() \
                else f"exit {r.get('returncode')}"
            lines.append(f"| {r['row']} | failed: {why.replace('|', '/')} |||||||||||")
            continue
        base = by_row.get(f"trl_{r['method']}_nockpt", {})
        loss = "-" if r["loss_last"] is None else f"{r['loss_last']:.4f}"
        lines.append(f"| {r['row']} | {r['seconds']:.1f} | {r['load_s']:.1f} | {r['steps']} | {r['tokens']:,} | "
                     f"{r['tokens_per_s']:,.0f} | {gib(r['peak_alloc_gib'])} | {gib(r['peak_reserved_gib'])} | {loss} | "
                     f"{r['nan_steps']} | {ratio(r['tokens_per_s'], base.get('tokens_per_s'))} | "
                     f"{ratio(r['peak_alloc_gib'], base.get('peak_alloc_gib'))} |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma list of rows (default all: {','.join(ROWS)})")
    parser.add_argument("--size", default=None, help="model size from rlhf_organic.models.random_init.SIZES "
                        "(default 0.8b; tiny with --cpu-dry-run)")
    parser.add_argument("--items", type=int, default=256, help="A/B pairs (DPO, reward), thumbs (KTO), contexts (PPO pool)")
    parser.add_argument("--batch", type=int, default=8, help="items per optimizer step (PPO: rollouts per minibatch)")
    parser.add_argument("--prompt-words", type=int, help="words per prompt, about (default 150; 12 with --cpu-dry-run)")
    parser.add_argument("--reply-words", type=int, help="words per reply, about (default 150; 12 with --cpu-dry-run)")
    parser.add_argument("--ppo-contexts", type=int,
                        help="PPO contexts (one reply each) in the round (default 64; 8 with --cpu-dry-run)")
    parser.add_argument("--ppo-new-tokens", type=int, help="PPO reply tokens at most (default 64; 16 with --cpu-dry-run)")
    parser.add_argument("--tokenizer", help="a folder with tokenizer files (default: a BPE tokenizer trained on the data)")
    parser.add_argument("--model-dir", type=Path, help="reuse the model in this folder, or build it there")
    parser.add_argument("--cpu-dry-run", action="store_true", help="no CUDA: fp32, no quantization, size tiny, peak RSS")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per row before it is stopped")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rlhf_bench_gpu_qlora"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        try:
            answer = WORKERS[args.worker](json.loads(args.spec))
        except Exception:  # noqa: BLE001 - a failing row answers with its error (and the memory it had reached)
            answer = {"error": traceback.format_exc()[-4000:]}
            try:
                answer.update(Meter(json.loads(args.spec).get("cpu", True)).peaks())
            except Exception:  # noqa: BLE001
                pass
        reply(answer)
        return

    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    # a CPU dry run checks that every row runs, on a small model and short texts; a GPU run measures
    dry = args.cpu_dry_run
    args.size = args.size or ("tiny" if dry else "0.8b")
    args.prompt_words = args.prompt_words or (12 if dry else 150)
    args.reply_words = args.reply_words or (12 if dry else 150)
    args.ppo_contexts = args.ppo_contexts or (8 if dry else 64)
    args.ppo_new_tokens = args.ppo_new_tokens or (16 if dry else 64)
    from rlhf_organic.models.random_init import SIZES

    if args.size not in SIZES:
        parser.error(f"unknown size {args.size!r}; choose from {', '.join(SIZES)}")
    if not args.cpu_dry_run:
        import torch

        if not torch.cuda.is_available():
            sys.exit("no CUDA GPU visible: this bench measures QLoRA on a GPU (use --cpu-dry-run to test the script on CPU)")
    started = time.perf_counter()
    machine = machine_info("torch", "transformers", "trl", "peft")
    from importlib.metadata import PackageNotFoundError, version

    try:
        machine["bitsandbytes"] = version("bitsandbytes")
    except PackageNotFoundError:
        machine["bitsandbytes"] = None
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = make_data(args.workdir / f"data_{args.items}_{args.prompt_words}_{args.reply_words}_s{args.seed}.jsonl",
                     args.items, args.prompt_words, args.reply_words, args.seed)
    model, model_info = model_folder(args, data, args.workdir, args.timeout)
    common = {"data": str(data), "model": str(model), "batch": args.batch, "cpu": args.cpu_dry_run,
              "ppo_contexts": args.ppo_contexts, "ppo_new_tokens": args.ppo_new_tokens}
    results = []
    for row in rows:
        kind, method, options, label = ROWS[row]
        log(f"{row}: {label} ...")
        workdir = args.workdir / "runs" / row
        workdir.mkdir(parents=True, exist_ok=True)
        answer = run_worker(kind, {**common, **options, "method": method, "workdir": str(workdir)}, args.timeout)
        answer.update(row=row, method=method, label=label)
        if "error" in answer or "timed_out" in answer:
            log(f"  failed: {(answer.get('error') or 'timed out').strip()[-1500:]}")
        else:
            answer["tokens_per_s"] = answer["tokens"] / answer["seconds"]
            log(f"  {answer['seconds']:.1f} s, {answer['tokens_per_s']:,.0f} tokens/s, peak {gib(answer['peak_alloc_gib'])} GiB"
                f", load {answer['load_s']:.1f} s, loss {answer['loss_last']}, NaN steps {answer['nan_steps']}")
        results.append(answer)

    where = "CPU dry run (fp32, no quantization; memory is peak RSS)" if args.cpu_dry_run else \
        f"{results[0].get('device', 'GPU') if results else 'GPU'}, 4-bit NF4 + double quant, bf16 compute"
    built = f"Random-init {model_info['size']} Llama ({model})" if "size" in model_info else f"Model {model}"
    lines = [f"{built}, {args.items} items of ~{args.prompt_words} + {args.reply_words} words, "
             f"batch {args.batch}, LoRA r {LORA['r']} / alpha {LORA['alpha']} all linear, lr {LR}, one epoch; {where}; "
             f"torch {machine['torch']}, transformers {machine['transformers']}, trl {machine['trl']}, peft {machine['peft']}, "
             f"bitsandbytes {machine['bitsandbytes']}", "", *table(results, args.cpu_dry_run), "",
             "Speed and memory ratios are against the same method's TRL row without checkpointing. Ours precomputes "
             "the reference log-probs (DPO, KTO) before the loop, inside the timed seconds; TRL's rows compute the "
             "reference every step. KTO tokens leave out the no-gradient KL sequences both run. ours_ppo: one round "
             f"({args.ppo_contexts} contexts, up to {args.ppo_new_tokens} new tokens, seconds = generation + scoring + "
             "updates, tokens = the rollouts' prompt + reply); TRL 1.16 has no PPO trainer (removed after 1.12), so no TRL row."]
    print("\n".join(lines))
    report = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("worker", "spec")},
              "lora": LORA, "lr": LR, "beta": BETA, "reward_max_length": REWARD_MAX_LENGTH, "model": model_info,
              "machine": machine, "results": results, "seconds": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
