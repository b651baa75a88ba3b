"""Random-init Llama models of realistic shapes, built from a config: GPU tests and benchmarks, no download.

A model of the right shape (depth, width, vocabulary) exercises what a 2-layer toy hides: memory,
speed, and the numerics of deep stacks. ``save_random_llama`` writes one with any tokenizer (a real
one such as SmolLM2's, or one trained on the spot) and a vocabulary of the size's width, which may be
larger than the tokenizer's: the logits are as wide as a real model's of that class.
"""

from __future__ import annotations

from pathlib import Path

# name -> (hidden, layers, intermediate, attention heads, key/value heads, vocabulary)
SIZES = {
    "tiny": (256, 4, 688, 4, 2, 49152),           # ~0.03B: a CPU smoke test of the GPU scripts
    "0.5b": (1024, 24, 2816, 16, 8, 49152),       # Qwen2.5-0.5B / SmolLM2-360M class
    "0.8b": (2048, 16, 5632, 32, 8, 49152),       # the shape of the project's first GPU check
    "1b": (2048, 16, 8192, 32, 8, 128256),        # Llama-3.2-1B class
    "3b": (3072, 28, 8192, 24, 8, 128256),        # Llama-3.2-3B class
    "8b": (4096, 32, 14336, 32, 8, 128256),       # Llama-3.1-8B class
}


def llama_config(size: str, tokenizer, max_positions: int = 4096):
    """A LlamaConfig of ``size`` (a key of ``SIZES``) with ``tokenizer``'s special tokens."""
    from transformers import LlamaConfig

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    hidden, layers, inter, heads, kv, vocab = SIZES[size]
    return LlamaConfig(
        vocab_size=max(vocab, len(tokenizer)), hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=max_positions,
        tie_word_embeddings=size in ("tiny", "0.5b", "0.8b", "1b"), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, initializer_range=0.02,
    )


def save_random_llama(folder: str | Path, tokenizer, size: str = "0.8b", *, seed: int = 0, dtype: str = "bfloat16",
                      device: str | None = None) -> Path:
    """Build a random-init Llama of ``size`` around ``tokenizer`` and save both (safetensors) to ``folder``.
    ``device``: where to build it (a GPU builds an 8B model in seconds; default: CUDA when present)."""
    import torch
    from transformers import LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = Path(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = llama_config(size, tokenizer)
    torch.manual_seed(seed)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with torch.device(device):
        model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
