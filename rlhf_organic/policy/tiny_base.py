"""The ``tiny`` policy base: a small Llama built from a config, with a tokenizer trained on the data,
then taught to imitate the logged bot (cross-entropy on every bot reply of the training conversations,
good and bad alike, no feedback used). It stands in for the deployed model the logs came from, so that
feedback-based training has a fluent starting point, as with a real base model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.dataset_files import read_table, table_path
from ..losses import token_nll
from ..models.tiny import tiny_config, train_tokenizer
from ..sequences import batch_sequences, held_out
from ..training import Objective, fit, step_plan
from .model import encode_completions, encode_prompts
from .train import completion_tokens

TOKENIZER_TEXTS = 50_000


def build_tiny_base(dataset: Path, folder: Path, section, *, seed: int = 0, progress=None, log=print) -> Path:
    """Write the imitation-trained tiny base for ``section`` (a PolicySection) into ``folder``."""
    from transformers import AutoModelForCausalLM

    t = section.tiny
    frame = read_table(table_path(dataset, "examples"), columns=["conversation_id", "context", "response"]).to_pandas()
    frame = frame[~held_out(frame["conversation_id"], section.eval_fraction, seed)]
    rng = np.random.default_rng(seed)
    if len(frame) > t.imitation_max:
        frame = frame.iloc[np.sort(rng.choice(len(frame), t.imitation_max, replace=False))]
    texts = list(frame["response"])
    for context in frame["context"].iloc[:2000]:
        texts += [str(m["content"]) for m in context]
    tokenizer = train_tokenizer(texts[:TOKENIZER_TEXTS], t.vocab_size)
    config = tiny_config("decoder", len(tokenizer), hidden=t.hidden, layers=t.layers, heads=t.heads,
                         max_positions=max(512, section.max_prompt_length + section.max_completion_length + 64))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    history = []
    if t.imitation_epochs > 0 and len(frame):
        prompts = encode_prompts(tokenizer, frame["context"], section.max_prompt_length)
        replies = encode_completions(tokenizer, frame["response"], section.max_completion_length)
        plan = step_plan([len(p) + len(c) for p, c in zip(prompts, replies)], 16, t.imitation_epochs, True, rng)

        tokens = np.array([completion_tokens(p, c) for p, c in zip(prompts, replies)], np.float64)

        def loss(step, total):
            ids, mask, comp = batch_sequences([prompts[i] for i in step], [replies[i] for i in step], tokenizer.pad_token_id)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
            return token_nll(logits, ids[:, 1:], comp[:, 1:], total=total["tokens"]), {}

        imitation = Objective(lambda step: {"tokens": float(tokens[step].sum())}, loss)

        settings = section.train.model_copy(update={"lr": t.imitation_lr, "weight_decay": 0.0})
        model.train()
        with tqdm(total=sum(len(s) for s in plan), desc="tiny base: imitate the logged bot", unit="reply",
                  disable=None if progress is None else not progress) as bar:
            history = fit(list(model.parameters()), plan, imitation, settings, lambda n, loss: bar.update(n), model=model)
        log(f"[policy] tiny base: imitated {len(frame)} logged bot replies, final loss {history[-1]['loss']:.3f}")
    model.eval()
    model.save_pretrained(folder)  # creates the folder
    tokenizer.save_pretrained(folder)
    (Path(folder) / "history.json").write_text(json.dumps(history))  # the loss curve a reused stage replays
    return folder
