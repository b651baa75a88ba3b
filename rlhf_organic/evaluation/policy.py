"""Evaluating a policy on held-out contexts: replies from the base (adapter off) and the tuned policy,
sampled with the same settings and seed, scored by the trained reward model and, when the data is
simulated, by the clean judge (mean p(good), unsafe rate, win rate of tuned over base). KL to the
reference is exact per token: the sum over the tuned reply's tokens of KL(policy || reference) of the
next-token distributions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import torch
from tqdm.auto import tqdm

from ..data.dataset_files import has_table, read_table, table_path
from ..policy.model import PolicyModel, encode_prompts
from ..sequences import batch_sequences, held_out


def eval_contexts(dataset: Path, fraction: float, seed: int, n: int) -> pd.DataFrame:
    """``n`` bot turns (any, rated or not) of held-out conversations: their context and the logged reply.

    A dataset of A/B choices only (TRL preference rows) has no bot turns: then held-out A/B choices
    give the contexts, with the chosen reply as the logged one.
    """
    columns = ["example_id", "user_id", "context", "response"]
    path, key, read = table_path(dataset, "examples"), "conversation_id", columns
    ids = read_table(path, columns=["example_id", key]).to_pandas()
    prefs = table_path(dataset, "preferences")
    if len(ids) == 0 and has_table(prefs):
        path, key, read = prefs, "preference_id", ["preference_id", "user_id", "context", "chosen"]
        ids = read_table(path, columns=[key]).to_pandas()
    ids = ids[held_out(ids[key], fraction, seed)]
    if len(ids) > n:
        ids = ids.sample(n, random_state=seed)
    if len(ids) == 0:
        return pd.DataFrame(columns=columns)
    rows = read_table(path, columns=read, filters=pc.field(read[0]).isin(list(ids[read[0]]))).to_pandas()
    rows.columns = columns  # an A/B choice's id and chosen reply stand for the example's
    return rows.sort_values("example_id").reset_index(drop=True)


def generate_all(policy: PolicyModel, prompts, sampling, *, reference: bool, seed: int, desc: str, quiet) -> list:
    """Replies to every prompt, in batches, each batch seeded from ``seed`` (base and tuned alike)."""
    out = []
    with tqdm(total=len(prompts), desc=desc, unit="reply", disable=quiet) as bar:
        for start in range(0, len(prompts), sampling.batch_size):
            chunk = prompts[start: start + sampling.batch_size]
            g = policy.generate(chunk, temperature=sampling.temperature, top_p=sampling.top_p,
                                max_new_tokens=sampling.max_new_tokens, reference=reference, seed=seed + start)
            out += list(zip(g.completions, g.texts))
            bar.update(len(chunk))
    return out


@torch.no_grad()
def kl_to_reference(policy: PolicyModel, prompts, completions, batch_size: int = 32) -> np.ndarray:
    """Per reply: sum over its tokens of KL(policy(.|prefix) || reference(.|prefix))."""
    out = np.zeros(len(prompts), np.float64)
    for start in range(0, len(prompts), batch_size):
        p, c = prompts[start: start + batch_size], completions[start: start + batch_size]
        if not any(c):
            continue
        ids, mask, comp = batch_sequences(p, [x or [policy.pad_id] for x in c], policy.pad_id, policy.device)
        comp = comp * torch.tensor([[1 if x else 0] for x in c], device=comp.device)  # empty replies count 0
        logits, _, tokens, _, _ = policy.completion_logits(ids, mask, comp)
        logp = torch.log_softmax(logits.float(), -1)
        with policy.reference():
            logq = torch.log_softmax(policy.completion_logits(ids, mask, comp)[0].float(), -1)
        per_token = (logp.exp() * (logp - logq)).sum(-1)
        out[start: start + len(p)] = (per_token * tokens).sum(-1).cpu().numpy()
    return out


def evaluate_policy(policy: PolicyModel, contexts: pd.DataFrame, section, *, judge=None, seed: int = 0,
                    progress: bool | None = None) -> tuple[dict, pd.DataFrame]:
    """(metrics, samples): base vs tuned replies to ``contexts``, scored."""
    quiet = None if progress is None else not progress
    s = section.eval.sampling
    prompts = encode_prompts(policy.tokenizer, contexts["context"], section.max_prompt_length)
    base = generate_all(policy, prompts, s, reference=True, seed=seed, desc="eval: base replies", quiet=quiet)
    tuned = generate_all(policy, prompts, s, reference=False, seed=seed, desc="eval: tuned replies", quiet=quiet)
    samples = pd.DataFrame({"example_id": contexts["example_id"], "context": contexts["context"],
                            "logged_reply": contexts["response"], "base_reply": [t for _, t in base],
                            "tuned_reply": [t for _, t in tuned]})
    kl = kl_to_reference(policy, prompts, [c for c, _ in tuned])
    samples["kl"] = kl
    metrics: dict = {"contexts": len(contexts), "kl_to_reference": float(kl.mean()),
                     "tuned_reply_tokens": float(np.mean([len(c) for c, _ in tuned])),
                     "base_reply_tokens": float(np.mean([len(c) for c, _ in base]))}
    if policy.has_reward:
        for who in ("base", "tuned"):
            samples[f"{who}_reward"] = policy.reward_scores(list(contexts["context"]), list(samples[f"{who}_reply"]))
        metrics["reward"] = {"base": float(samples["base_reward"].mean()), "tuned": float(samples["tuned_reward"].mean())}
        metrics["reward"]["win_rate"] = win_rate(samples["tuned_reward"], samples["base_reward"])
    if judge is not None:
        for who in ("base", "tuned"):
            good, unsafe = judge(list(contexts["context"]), list(samples[f"{who}_reply"]))
            samples[f"{who}_judge_good"], samples[f"{who}_judge_unsafe"] = good, unsafe
        metrics["judge"] = {
            "base_good": float(samples["base_judge_good"].mean()), "tuned_good": float(samples["tuned_judge_good"].mean()),
            "base_unsafe_rate": float((samples["base_judge_unsafe"] > 0.5).mean()),
            "tuned_unsafe_rate": float((samples["tuned_judge_unsafe"] > 0.5).mean()),
            "win_rate": win_rate(samples["tuned_judge_good"], samples["base_judge_good"]),
        }
    return metrics, samples


def win_rate(tuned, base) -> float:
    """Share of contexts where the tuned reply scores higher than the base's (ties count half)."""
    tuned, base = np.asarray(tuned), np.asarray(base)
    return float(np.mean((tuned > base) + 0.5 * (tuned == base))) if len(tuned) else float("nan")


def samples_markdown(samples: pd.DataFrame, n: int, *, show_user_text: bool = False) -> str:
    """The first ``n`` samples side by side, for a person to read.

    Unless ``show_user_text``, the logged conversation (its context turns, which hold what a real person
    wrote, and the logged bot reply, which can quote it) is replaced by a note; the base and tuned
    replies, generated here, are always shown.
    """
    from ..data.privacy import HIDDEN_TEXT

    shown = "last two turns shown" if show_user_text else "hidden: they hold what real users wrote"
    lines = ["# Samples: base vs tuned", "", f"Held-out contexts ({shown}), the logged bot reply, and replies "
             "sampled from the base (adapter off) and the tuned policy with the same settings and seed.", ""]
    for i, row in samples.head(n).iterrows():
        lines.append(f"## {i + 1}. `{row['example_id']}`")
        if show_user_text:
            for m in list(row["context"])[-2:]:
                lines.append(f"> **{m['role']}**: {m['content']}")
        else:
            lines.append(f"> {HIDDEN_TEXT}")
        lines.append("")
        for who, key in (("logged", "logged_reply"), ("base", "base_reply"), ("tuned", "tuned_reply")):
            extra = ""
            if f"{who}_judge_good" in row:
                extra = f" (judge p(good) {row[f'{who}_judge_good']:.2f})"
            text = row[key] if show_user_text or who != "logged" else "(logged reply hidden: output.show_user_text)"
            lines.append(f"- **{who}**{extra}: {text}")
        lines.append("")
    return "\n".join(lines)
