"""Tiny models built from a config, with a tokenizer trained on the spot: tests and demos, no download.

A byte-level BPE tokenizer is trained on the texts the model will see (a few seconds), then a
2-layer Llama (decoder) or BERT (encoder) with random weights is built around its vocabulary. The
folder written by ``save_tiny`` loads with the ordinary ``from_pretrained`` calls, so everything
downstream treats it like any local model folder.
"""

from __future__ import annotations

from pathlib import Path

# Role-tagged turns, so the model sees who said what; used when a tokenizer has no chat template.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]


def train_tokenizer(texts, vocab_size: int = 2000):
    """A byte-level BPE tokenizer trained on ``texts`` (any iterable of str)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from tqdm.auto import tqdm
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # The trainer's own bars (Rust, written straight to file descriptor 2) print blank lines into a pipe
    # or a log file, where they are hidden, and read "N / 0" while a stage's length is unknown: they stay
    # off, and a tqdm bar over the texts (the slow part) shows on a terminal only, like every other bar.
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    length = len(texts) if hasattr(texts, "__len__") else None
    with tqdm(texts, total=length, desc="tokenizer", unit="text", leave=False, disable=None) as bar:
        tok.train_from_iterator(bar, trainer, length=length)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(kind: str, vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 4, max_positions: int = 512):
    """A small Llama (``decoder``) or BERT (``encoder``) config."""
    if kind == "decoder":
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_positions,
            pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
        )
    if kind == "encoder":
        from transformers import BertConfig

        return BertConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
            num_attention_heads=heads, max_position_embeddings=max_positions, pad_token_id=0,
        )
    raise ValueError(f"tiny model kind must be 'decoder' or 'encoder', not {kind!r}")


def save_tiny(folder: str | Path, texts, kind: str = "decoder", vocab_size: int = 2000, seed: int = 0, **sizes) -> Path:
    """Train a tokenizer on ``texts``, build a tiny ``kind`` model with it and save both to ``folder``."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-shard bar for a model of a few MB is noise
    folder = Path(folder)
    tokenizer = train_tokenizer(texts, vocab_size)
    config = tiny_config(kind, len(tokenizer), **sizes)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config) if kind == "decoder" else AutoModel.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
