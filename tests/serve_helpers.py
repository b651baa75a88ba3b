"""Tiny models for the chat server's tests: a random base and a policy folder (a real LoRA adapter on it)."""

from __future__ import annotations

import json
from pathlib import Path

from rlhf_organic.models.tiny import save_tiny

TEXTS = ["hello there, how are you today?", "I like books and tea.", "what is your favourite film?",
         "the weather is nice", "you are stupid", "tell me about cats and dogs"] * 20


def tiny_base(folder: Path) -> Path:
    if not (folder / "config.json").exists():
        save_tiny(folder, TEXTS, kind="decoder", vocab_size=300, hidden=32, layers=1, heads=2)
    return folder


def tiny_policy(folder: Path, base: Path, seed: int = 0) -> Path:
    """A policy folder as ``policy train`` writes it (adapter/, policy.json), its LoRA weights random."""
    import torch
    from peft import LoraConfig, get_peft_model

    from rlhf_organic.models.loading import load_base, load_tokenizer
    from rlhf_organic.policy.model import ensure_chat_template

    torch.manual_seed(seed)
    lm = load_base(str(base), causal_lm=True, log=lambda message: None)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", init_lora_weights=False)
    model = get_peft_model(lm, config)
    model.save_pretrained(folder / "adapter")
    tokenizer = load_tokenizer(str(base))
    ensure_chat_template(tokenizer, lambda message: None)
    tokenizer.save_pretrained(folder / "adapter")
    meta = {"format": 1, "base": str(Path(base).resolve()), "method": "kto", "dtype": "float32", "quantization": "none",
            "max_prompt_length": 256, "max_completion_length": 64, "trust_remote_code": False}
    (folder / "policy.json").write_text(json.dumps(meta))
    return folder
