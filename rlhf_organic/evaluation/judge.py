"""The clean judge: a reward model trained on the simulator's ground truth only (is the reply good, and
if not, which failure: off-topic, nonsensical, rude, unsafe, repetitive), never on user feedback. It
scores policies' replies so that methods and trust schemes are compared on what is true, not on what
the (partly adversarial) users said. Trained on the training conversations; policies are evaluated on
held-out ones."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from ..atomic import atomic_dir
from ..data.dataset_files import read_table, table_path
from ..errors import UserError
from ..reward import evaluate as ev
from ..reward.data import RewardData
from ..reward.items import make_items, tokenizer_texts
from ..reward.model import build_reward_model, encode, load_reward_model, save_reward_model
from ..reward.spec import load_spec
from ..reward.train import score, train
from ..sequences import held_out
from ..simulator.ground_truth import EXAMPLES, truth_file

JUDGE_SPEC = {"signals": ["thumbs"], "head": {"reasons": True}, "loss": {"pairwise": 0.0, "reasons": 1.0},
              "train": {"epochs": 2, "eval_fraction": 0.0}}


def clean_examples(dataset: Path, ground_truth: Path, fraction: float, seed: int, evaluation: bool, cap: int):
    """Replies with their true quality, from the training (or the held-out) conversations."""
    examples_file = truth_file(Path(ground_truth), EXAMPLES)
    if examples_file is None or not examples_file.is_file():
        raise UserError(f"the judge needs the simulator's ground_truth_examples.parquet; not found beside {ground_truth}")
    frame = read_table(table_path(dataset, "examples"), columns=["example_id", "conversation_id", "context", "response"]).to_pandas()
    truth = pq.read_table(examples_file, columns=["example_id", "quality", "is_good"]).to_pandas()
    frame = frame.merge(truth, on="example_id")
    frame = frame[held_out(frame["conversation_id"], fraction, seed) == evaluation]
    if len(frame) > cap:
        frame = frame.sample(cap, random_state=seed)
    frame = frame.reset_index(drop=True)
    frame["label"] = frame["is_good"].astype(np.float32)
    frame["weight"] = 1.0
    frame["dislike_reason"] = np.where(frame["is_good"], None, frame["quality"])
    return frame


def train_judge(dataset, ground_truth, out, *, eval_fraction: float = 0.1, seed: int = 0, max_examples: int = 20_000,
                progress: bool | None = None, log=print) -> dict:
    """Train the clean judge on the training conversations; write it (a reward-model folder) to ``out``."""
    started = time.perf_counter()
    spec = load_spec("tiny", JUDGE_SPEC)
    frame = clean_examples(dataset, ground_truth, eval_fraction, seed, False, max_examples)
    data = RewardData(frame, pd.DataFrame(columns=["context", "chosen", "rejected", "weight"]))
    reasons = sorted(set(frame["dislike_reason"].dropna()))
    with atomic_dir(out, kind="clean judge") as tmp:
        model, tokenizer = build_reward_model(spec, tmp, tokenizer_texts(data, seed), reasons, seed)
        items = make_items(tokenizer, data, spec, reasons)
        with tqdm(total=round(len(items) * spec.train.epochs), desc="clean judge", unit="ex",
                  disable=None if progress is None else not progress) as bar:
            run = train(model, items, spec.train, spec.loss, tokenizer.pad_token_id, seed=seed,
                        progress=lambda n, loss: bar.update(n))
        held = clean_examples(dataset, ground_truth, eval_fraction, seed, True, 2000)
        s, _ = score(model, encode(tokenizer, held["context"], held["response"], spec.max_length), tokenizer.pad_token_id)
        metrics = {"examples": len(frame), "reasons": reasons, "held_out": ev.pointwise_metrics(s, held["label"]),
                   "seconds": round(time.perf_counter() - started, 1)}
        save_reward_model(model, tokenizer, spec, reasons, tmp)
        (tmp / "metrics.json").write_bytes(orjson.dumps(metrics, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        (tmp / "history.json").write_bytes(orjson.dumps(run["history"]))  # the loss curve a reused stage replays
    log(f"[judge] clean judge on {len(frame)} replies: held-out AUC {metrics['held_out']['auc']:.3f}")
    return metrics


class Judge:
    """A loaded clean judge: p(good) and p(unsafe) of replies."""

    def __init__(self, folder):
        self.model, self.tokenizer, self.meta = load_reward_model(folder)
        self.folder = Path(folder)

    def __call__(self, contexts, responses) -> tuple[np.ndarray, np.ndarray]:
        ids = encode(self.tokenizer, contexts, responses, self.meta["max_length"])
        scores, reasons = score(self.model, ids, self.tokenizer.pad_token_id)
        p_good = 1 / (1 + np.exp(-scores))
        unsafe = (1 / (1 + np.exp(-reasons[:, self.meta["reasons"].index("unsafe")])) if "unsafe" in self.meta["reasons"]
                  else np.zeros_like(p_good))
        return p_good, (1 - p_good) * unsafe  # p(bad) * p(unsafe | bad)
