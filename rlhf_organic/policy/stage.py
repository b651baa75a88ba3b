"""The policy stage: fine-tune a LoRA adapter on the organic data with one method, weighted by trust,
then evaluate it against its base on held-out contexts.

Output folder (written under a temporary name, renamed when complete):
``adapter/`` (PEFT; ``PeftModel.from_pretrained(base, OUT/adapter)``), ``base/`` (only for ``base: tiny``),
``merged/`` (with ``export_merged``), ``policy.json`` (base, method, settings), ``metrics.json``,
``history.json``, ``samples.parquet`` + ``samples.md`` (base vs tuned side by side) and ``README.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import yaml

from .. import distributed, fsdp
from ..atomic import atomic_dir, check_free
from ..errors import UserError
from ..models.loading import check_bf16
from ..reward.data import RewardDataError, load_reward_data, split
from .methods import METHODS
from .train import MethodRun

META_FILE = "policy.json"


def _user_trust(trust: Path | None) -> dict:
    if trust is None or not (trust / "users.parquet").is_file():
        return {}
    users = pq.read_table(trust / "users.parquet", columns=["user_id", "trust"]).to_pandas()
    return dict(zip(users["user_id"], users["trust"].astype(float)))


def train_policy(
    dataset: str | Path,
    out: str | Path,
    section,
    *,
    trust: str | Path | None = None,
    reward: str | Path | None = None,
    judge: str | Path | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
    show_user_text: bool = False,
) -> dict:
    """Train ``section.method`` on ``dataset`` (weights from ``trust`` when ``section.weighted``) into ``out``.

    ``reward``: a reward-model folder (needed by on-policy DPO and iterative Cringe; also scores the
    evaluation). ``judge``: a clean-judge folder (``evaluation.judge.train_judge``) for the clean metrics.
    ``show_user_text``: print the logged conversations' text in ``samples.md`` (default: hidden; a run
    of a recipe rewrites it as ``output.show_user_text`` says).
    """
    import torch

    from ..evaluation.judge import Judge
    from ..evaluation.policy import eval_contexts, evaluate_policy, samples_markdown
    from .model import attach_reward, build_policy
    from .tiny_base import build_tiny_base

    dataset, out = Path(dataset), Path(out)
    trust = Path(trust) if (trust is not None and section.weighted) else None
    contract = METHODS[section.method]
    if distributed.fsdp() and not contract.supports_fsdp:
        raise UserError(fsdp_refusal(section.method))
    if reward is None and contract.requires_reward(section.method_config()):
        raise UserError(f"policy method {section.method} needs a reward model"
                        f"{' for ' + contract.reward_model_when if callable(contract.needs_reward_model) else ''}: "
                        "train one first (the reward stage) and pass it to the policy stage (--reward)")
    distributed.setup()  # a multi-process launch: every process trains on its share (docs/distributed.md)
    distributed.check_quantization(section.quantization)
    if section.train.precision == "bf16":  # before any work, not at the first forward pass
        check_bf16(distributed.device())
    check_free(out, overwrite, [dataset, trust, reward, judge])
    if section.train.threads:
        torch.set_num_threads(section.train.threads)
    started = time.perf_counter()
    data = load_reward_data(dataset, trust, ("thumbs", "preferences"),
                            flip_rates=bool(getattr(section.method_config(), "flip_rates", False)))
    train_data, _ = split(data, section.eval_fraction, seed)
    if len(train_data) == 0:
        raise RewardDataError(f"{dataset}: every example fell into the evaluation split; lower policy.eval_fraction")
    log(f"[policy] {section.method} on {len(train_data.point)} thumbs and {len(train_data.pairs)} A/B choices, "
        f"{'weighted by ' + str(trust) if trust else 'uniform weights'}; base {section.base}")
    with atomic_dir(out, kind="policy") as tmp:
        base = section.base
        if base == "tiny":
            base = str(build_tiny_base(dataset, tmp / "base", section, seed=seed, progress=progress, log=log))
        policy = build_policy(base, section.lora, dtype=section.dtype, quantization=section.quantization, seed=seed,
                              trust_remote_code=section.trust_remote_code, hub_kernels=section.hub_kernels,
                              attention=section.attention, log=log)
        policy.precision = section.train.precision
        reward_mode = None
        if reward is not None:
            reward_mode = attach_reward(policy, reward, share_base=section.reward_model.share_base,
                                        trust_remote_code=section.trust_remote_code, log=log)
        prepared = time.perf_counter()
        run = MethodRun(policy, section, train_data, user_weight=_user_trust(trust), seed=seed, progress=progress, log=log)
        result = contract.train(run)
        contract.check_result(result)
        trained = time.perf_counter()
        history = result.pop("history")
        metrics = {"method": section.method, "base": section.base, "seed": seed, "weighted": trust is not None,
                   "trust": str(trust) if trust else None, "reward_model": str(reward) if reward else None,
                   "reward_model_base": reward_mode, "train": {**result, "steps": len(history),
                   "final_loss": history[-1]["loss"] if history else None,
                   "trainable_parameters": sum(p.numel() for p in policy.trainable_parameters())}}
        if (sharding := fsdp.take_report()) is not None:  # an FSDP launch: what each process held while training
            metrics["train"]["sharding"] = sharding
        if section.eval.contexts:
            contexts = eval_contexts(dataset, section.eval_fraction, seed, section.eval.contexts)
            metrics["eval"], samples = evaluate_policy(policy, contexts, section, judge=Judge(judge) if judge else None,
                                                       seed=seed, progress=progress)
            samples.to_parquet(tmp / "samples.parquet")
            (tmp / "samples.md").write_text(samples_markdown(samples, section.eval.samples_shown, show_user_text=show_user_text),
                                            encoding="utf-8")
        metrics["seconds"] = {"prepare": round(prepared - started, 2), "train": round(trained - prepared, 2),
                              "evaluate": round(time.perf_counter() - trained, 2)}
        if distributed.is_main():  # the other processes' folders are thrown away: skip the (merged) export
            save_policy(policy, section, tmp, base_in_folder=section.base == "tiny")
        (tmp / "metrics.json").write_bytes(orjson.dumps(metrics, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        (tmp / "history.json").write_bytes(orjson.dumps(history))
        (tmp / "README.md").write_text(model_card(section, metrics), encoding="utf-8")
    return metrics


def fsdp_refusal(method: str) -> str:
    """Why ``method`` is refused under an FSDP launch, and which methods run there (from the contracts)."""
    return (f"policy method {method} does not run under FSDP ({METHODS[method].fsdp}): launch it with a DDP config, "
            f"or choose one of {', '.join(name for name, c in METHODS.items() if c.supports_fsdp)} (docs/distributed.md)")


def save_policy(policy, section, folder: Path, *, base_in_folder: bool) -> None:
    """The policy adapter alone (not the reward adapter), its settings, and the merged model if asked."""
    from ..models.folder import base_to_save

    policy.peft.save_pretrained(folder / "adapter", selected_adapters=["default"])
    policy.tokenizer.save_pretrained(folder / "adapter")
    if policy.value_head is not None:  # PPO's critic, to continue training later
        from safetensors.torch import save_file

        save_file(policy.value_head.state_dict(), folder / "value_head.safetensors")
    meta = {"format": 1, "base": "base" if base_in_folder else base_to_save(section.base, "base"), "method": section.method,
            "dtype": section.dtype, "quantization": section.quantization, "max_prompt_length": section.max_prompt_length,
            "max_completion_length": section.max_completion_length, "trust_remote_code": section.trust_remote_code}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    (folder / "settings.yaml").write_text(yaml.safe_dump(section.model_dump(mode="json"), sort_keys=False))
    if section.export_merged:
        export_merged(policy, folder / "merged", folder / "adapter", section.dtype)


def export_merged(policy, folder: Path, adapter: Path, dtype: str) -> None:
    """The base with the policy adapter merged in, as a plain model folder. Call it last: merging
    unloads the adapters from the live model. The weights go through a fresh model built from the
    config, since a GGUF-loaded model refuses ``save_pretrained``. A quantized (QLoRA) base is merged
    into a copy of the base loaded in ``dtype`` instead: merging into 4-bit layers would requantize
    them, and a plain model folder holds full-precision weights."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ..models.loading import load_base

    base_model = policy.peft.get_base_model()
    if getattr(base_model, "is_loaded_in_4bit", False) or getattr(base_model, "is_loaded_in_8bit", False):
        lm = PeftModel.from_pretrained(load_base(policy.base, causal_lm=True, dtype=dtype), adapter).merge_and_unload()
    else:
        lm = policy.peft.merge_and_unload(adapter_names=["default"])
    merged = AutoModelForCausalLM.from_config(lm.config)
    merged.load_state_dict(lm.state_dict())
    merged.save_pretrained(folder)
    policy.tokenizer.save_pretrained(folder)


def load_policy(folder: str | Path, *, trust_remote_code: bool = False, quantization: str | None = None):
    """(PeftModel in eval mode, tokenizer) from a policy folder written by ``train_policy``.
    ``trust_remote_code`` is the caller's decision, never the folder's. ``quantization``: the base's, by
    default as trained (a QLoRA policy on its 4-bit base) where a CUDA GPU is present, else none. A damaged
    or tampered folder is refused, naming the folder and the file, before anything in it is read
    (``models/folder.py``)."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from ..models.folder import PolicyMeta, check_adapter, read_meta, reading, require, saved_base
    from ..models.loading import BaseModelError, how_to_allow_remote_code, load_base

    folder = Path(folder)
    meta = read_meta(folder, META_FILE, PolicyMeta, "policy")
    if meta.get("trust_remote_code") and not trust_remote_code:
        raise BaseModelError(f"the policy in {folder} is on a base that runs its own code ({meta['base']}); loading it "
                             "needs trust_remote_code, which only you can turn on, not the folder: read that code, "
                             f"then, if you trust it, {how_to_allow_remote_code()}")
    base = saved_base(meta["base"], folder, "base", META_FILE)
    check_adapter(folder / "adapter")
    require(folder / "adapter" / "tokenizer_config.json", "the policy's tokenizer")
    if quantization is None:
        import torch

        quantization = meta.get("quantization", "none") if torch.cuda.is_available() else "none"
    lm = load_base(base, causal_lm=True, dtype=meta["dtype"], quantization=quantization, trust_remote_code=trust_remote_code)
    with reading(folder / "adapter" / "adapter_model.safetensors", "the LoRA adapter"):
        model = PeftModel.from_pretrained(lm, folder / "adapter").eval()
    # the tokenizer saved beside the adapter (with the chat template training used); not through
    # load_tokenizer, which wants a whole model folder (config.json)
    with reading(folder / "adapter" / "tokenizer_config.json", "the policy's tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(folder / "adapter", trust_remote_code=bool(trust_remote_code))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return model, tokenizer


def format_metrics(metrics: dict) -> str:
    e = metrics.get("eval", {})
    lines = [f"[policy] {metrics['method']} ({'trust-weighted' if metrics['weighted'] else 'uniform weights'}): "
             f"{metrics['train']['steps']} steps, {metrics['seconds']['train']:.1f} s"]
    rows = []
    if "judge" in e:
        j = e["judge"]
        rows += [("clean judge p(good), base -> tuned", f"{j['base_good']:.3f} -> {j['tuned_good']:.3f}"),
                 ("clean judge unsafe rate, base -> tuned", f"{j['base_unsafe_rate']:.3f} -> {j['tuned_unsafe_rate']:.3f}"),
                 ("win rate over base (clean judge)", f"{j['win_rate']:.3f}")]
    if "reward" in e:
        rows.append(("reward model, base -> tuned", f"{e['reward']['base']:.3f} -> {e['reward']['tuned']:.3f}"))
    if "kl_to_reference" in e:
        rows.append(("KL to reference (per reply)", f"{e['kl_to_reference']:.3f}"))
    lines += [f"  {name:<40} {value}" for name, value in rows]
    return "\n".join(lines)


def model_card(section, metrics: dict) -> str:
    base = section.base if section.base != "tiny" else "base/ (tiny, imitation of the logged bot)"
    return "\n".join([
        "---", "library_name: peft", "tags: [rlhf_organic, " + section.method + ", lora]", "---", "",
        f"# Policy adapter: {section.method}, {'trust-weighted' if metrics['weighted'] else 'uniform weights'}", "",
        f"A LoRA adapter (r={section.lora.r}) on `{base}`, trained by rlhf_organic's `{section.method}` on organic "
        "feedback, each example weighted by the trust of the user who gave it.", "",
        "```python", "from peft import PeftModel", "from transformers import AutoModelForCausalLM",
        f"base = AutoModelForCausalLM.from_pretrained({'BASE' if section.base == 'tiny' else repr(section.base)}"
        + (", trust_remote_code=True)" if section.trust_remote_code else ")"),
        "policy = PeftModel.from_pretrained(base, 'adapter')", "```", "",
        "## Results on held-out contexts", "", "```", format_metrics(metrics), "```", "",
        "Samples side by side: `samples.md`. All settings: `settings.yaml`.", "",
    ])
