"""The reward stage: train a reward model on a dataset with trust weights; score examples with it.

``train_reward`` writes ``MODEL_DIR`` (see ``model.py`` for the files) plus ``metrics.json`` and a
model card ``README.md``, under a temporary name renamed when complete. ``score_examples`` scores a
dataset folder's examples, or a Parquet / JSONL file with ``response`` (and optionally ``context``)
columns, and writes Parquet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from .. import distributed, fsdp
from ..atomic import atomic_dir, check_free, overlap
from ..data.dataset_files import has_table, read_table, table_path
from ..errors import UserError
from ..models.loading import check_bf16
from ..sequences import held_out
from ..simulator.ground_truth import EXAMPLES, PREFERENCES, USERS, truth_file
from . import evaluate as ev
from .card import model_card
from .data import RewardData, RewardDataError, load_reward_data, reason_vocabulary, split
from .items import make_items, tokenizer_texts
from .model import build_reward_model, encode, load_reward_model, save_reward_model
from .spec import RewardSpec
from .train import score, train


def _user_groups(trust_dir: Path | None, ground_truth: Path | None) -> dict[str, dict]:
    """user_id -> group name, per grouping ("trust": trusted / distrusted, "user_type")."""
    groups = {}
    if trust_dir is not None and (trust_dir / "users.parquet").is_file():
        users = pq.read_table(trust_dir / "users.parquet", columns=["user_id", "trust"]).to_pandas()
        groups["trust"] = dict(zip(users["user_id"], np.where(users["trust"] >= 0.5, "trusted", "distrusted")))
    users_file = truth_file(ground_truth, USERS)
    if users_file is not None:
        if not users_file.is_file():
            raise UserError(f"ground truth not found: {users_file}")
        truth = pq.read_table(users_file).to_pandas()
        if "user_type" in truth:
            groups["user_type"] = dict(zip(truth["user_id"], truth["user_type"]))
    return groups


def _clean_examples(dataset: Path, ground_truth: Path | None, fraction: float, seed: int, cap: int) -> pd.DataFrame:
    """Held-out replies (any, rated or not) with a clean label: simulator truth, else crowdworker gold.

    The labels and ids are read first; contexts only for the (at most ``cap``) replies chosen.
    """
    import pyarrow.compute as pc

    from ..trust.data import gold_labels

    path = table_path(dataset, "examples")
    examples_file = truth_file(ground_truth, EXAMPLES)
    if examples_file is not None and examples_file.is_file():
        ids = read_table(path, columns=["example_id", "conversation_id"]).to_pandas()
        truth = pq.read_table(examples_file, columns=["example_id", "is_good"]).to_pandas()
        labelled = ids.merge(truth, on="example_id").rename(columns={"is_good": "clean_label"})
        source = "simulator"
    else:
        table = read_table(path, columns=["example_id", "conversation_id", "gold"])
        rows, good = gold_labels(table.column("gold"))
        labelled = table.drop_columns(["gold"]).take(pa.array(rows, pa.int64())).to_pandas()
        labelled["clean_label"] = good.astype(bool)
        source = "gold"
    if len(labelled):
        labelled = labelled[held_out(labelled["conversation_id"], fraction, seed)]
    if len(labelled) > cap:
        labelled = labelled.sample(cap, random_state=seed)
    if len(labelled) == 0:
        return labelled
    texts = read_table(path, columns=["example_id", "context", "response"],
                      filters=pc.field("example_id").isin(list(labelled["example_id"]))).to_pandas()
    return labelled.merge(texts, on="example_id").assign(clean_source=source).reset_index(drop=True)


def evaluate_model(model, tokenizer, eval_data: RewardData, spec: RewardSpec, dataset: Path, *, seed: int,
                   trust_dir: Path | None, ground_truth: Path | None, progress=None) -> dict:
    pad_id = tokenizer.pad_token_id
    groups = _user_groups(trust_dir, ground_truth)
    metrics: dict = {}
    point, pairs = eval_data.point, eval_data.pairs
    if len(point):
        s, _ = score(model, encode(tokenizer, point["context"], point["response"], spec.max_length), pad_id, progress=progress)
        metrics["pointwise"] = ev.pointwise_metrics(s, point["label"])
        for name, of_user in groups.items():
            metrics[f"pointwise_by_{name}"] = ev.by_group(point["user_id"].map(of_user).fillna("unknown"),
                                                          ev.pointwise_metrics, s, point["label"])
    if len(pairs):
        c, _ = score(model, encode(tokenizer, pairs["context"], pairs["chosen"], spec.max_length), pad_id, progress=progress)
        r, _ = score(model, encode(tokenizer, pairs["context"], pairs["rejected"], spec.max_length), pad_id, progress=progress)
        metrics["pairwise"] = ev.pairwise_metrics(c, r)
        for name, of_user in groups.items():
            metrics[f"pairwise_by_{name}"] = ev.by_group(pairs["user_id"].map(of_user).fillna("unknown"), ev.pairwise_metrics, c, r)
        prefs_file = truth_file(ground_truth, PREFERENCES)
        if prefs_file is not None and prefs_file.is_file():
            truth = pq.read_table(prefs_file, columns=["preference_id", "correct"]).to_pandas()
            correct = pairs["preference_id"].map(dict(zip(truth["preference_id"], truth["correct"])))
            known = correct.notna().to_numpy()
            # the truly better reply is the chosen one when the choice was correct
            better = np.where(correct[known].astype(bool), c[known], r[known])
            worse = np.where(correct[known].astype(bool), r[known], c[known])
            metrics["clean_pairwise"] = ev.pairwise_metrics(better, worse)
    clean = _clean_examples(dataset, ground_truth, spec.train.eval_fraction, seed, spec.train.eval_clean_max)
    if len(clean):
        s, _ = score(model, encode(tokenizer, clean["context"], clean["response"], spec.max_length), pad_id, progress=progress)
        metrics["clean_pointwise"] = {"source": clean["clean_source"].iloc[0], **ev.pointwise_metrics(s, clean["clean_label"])}
    return metrics


def train_reward(
    dataset: str | Path,
    out: str | Path,
    spec: RewardSpec,
    *,
    trust: str | Path | None = None,
    ground_truth: str | Path | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train ``spec`` on ``dataset`` weighted by the trust folder ``trust``; write the model folder ``out``."""
    import torch

    dataset, out = Path(dataset), Path(out)
    trust = Path(trust) if trust is not None else None
    ground_truth = Path(ground_truth) if ground_truth is not None else None
    distributed.setup()  # a multi-process launch: every process trains on its share (docs/distributed.md)
    distributed.check_quantization(spec.quantization)
    if spec.train.precision == "bf16":  # before any work, not at the first forward pass
        check_bf16(distributed.device())
    check_free(out, overwrite, [dataset, trust, ground_truth])
    if spec.train.threads:
        torch.set_num_threads(spec.train.threads)
    started = time.perf_counter()
    data = load_reward_data(dataset, trust, spec.signals, flip_rates=spec.loss.flip_rates)
    train_data, eval_data = split(data, spec.train.eval_fraction, seed)
    if len(train_data) == 0:
        raise RewardDataError(f"{dataset}: every example fell into the evaluation split; lower train.eval_fraction")
    weights = np.concatenate([train_data.point["weight"], train_data.pairs["weight"]]).astype(np.float64)
    if weights.sum() == 0:
        raise RewardDataError(f"{trust}: every training weight is 0 (the trust scheme distrusts every user)")
    reasons = reason_vocabulary(train_data.point) if spec.head.reasons else []
    log(f"[reward] {spec.name}: {len(train_data.point)} thumbs and {len(train_data.pairs)} A/B choices to train on "
        f"({len(eval_data.point)} and {len(eval_data.pairs)} held out), "
        f"{'weighted by ' + str(trust) if trust else 'uniform weights'}; base {spec.base}")
    with atomic_dir(out, kind="reward model") as tmp:
        model, tokenizer = build_reward_model(spec, tmp, tokenizer_texts(train_data, seed) if spec.base == "tiny" else None,
                                              reasons, seed)
        items = make_items(tokenizer, train_data, spec, reasons)
        prepared = time.perf_counter()
        with tqdm(total=round(len(items) * spec.train.epochs), desc=f"reward ({spec.name})", unit="ex",
                  disable=None if progress is None else not progress) as bar:
            def advance(n, loss):
                bar.update(n)
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

            run = train(model, items, spec.train, spec.loss, tokenizer.pad_token_id, seed=seed, progress=advance)
        trained = time.perf_counter()
        with tqdm(desc=f"reward eval ({spec.name})", unit="ex", disable=None if progress is None else not progress) as bar:
            evaluation = evaluate_model(model, tokenizer, eval_data, spec, dataset, seed=seed, trust_dir=trust,
                                        ground_truth=ground_truth, progress=bar.update)
        metrics = {
            "spec": spec.name, "base": spec.base, "seed": seed, "trust": str(trust) if trust else None,
            "train": {"thumbs": len(train_data.point), "pairs": len(train_data.pairs), "steps": run["steps"],
                      "weight_sum": float(weights.sum()), "final_loss": run["history"][-1]["loss"],
                      "trainable_parameters": sum(p.numel() for p in model.trainable_parameters())},
            "reasons": reasons,
            "eval": evaluation,
        }
        if (sharding := fsdp.take_report()) is not None:  # an FSDP launch: what each process held while training
            metrics["train"]["sharding"] = sharding
        metrics["seconds"] = {"prepare": round(prepared - started, 2), "train": round(trained - prepared, 2),
                              "examples_per_second": round(len(items) * spec.train.epochs / max(trained - prepared, 1e-9), 2),
                              "evaluate": round(time.perf_counter() - trained, 2)}
        save_reward_model(model, tokenizer, spec, reasons, tmp)
        (tmp / "metrics.json").write_bytes(orjson.dumps(metrics, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        (tmp / "history.json").write_bytes(orjson.dumps(run["history"]))
        (tmp / "README.md").write_text(model_card(spec, metrics))
    return metrics


def format_metrics(metrics: dict) -> str:
    """A short table of the headline numbers."""
    e = metrics["eval"]
    rows = [("held-out thumbs AUC", e.get("pointwise", {}).get("auc")),
            ("held-out thumbs calibration error", e.get("pointwise", {}).get("calibration_error")),
            ("held-out A/B accuracy", e.get("pairwise", {}).get("accuracy")),
            ("clean-label AUC", e.get("clean_pointwise", {}).get("auc")),
            ("clean-label accuracy", e.get("clean_pointwise", {}).get("accuracy")),
            ("clean A/B accuracy", e.get("clean_pairwise", {}).get("accuracy"))]
    lines = [f"[reward] {metrics['spec']}: {metrics['train']['steps']} steps, {metrics['seconds']['train']:.1f} s"]
    lines += [f"  {name:<36} {value:.3f}" for name, value in rows if value is not None]
    return "\n".join(lines)


def read_examples(path: Path) -> pd.DataFrame:
    """Examples to score: a dataset folder's examples.parquet (a file, or a folder of parts), or a
    Parquet / JSONL file."""
    if path.is_dir() and path.suffix != ".parquet":
        path = table_path(path, "examples")
    if not has_table(path):
        raise UserError(f"{path} not found")
    if path.suffix == ".parquet":
        frame = read_table(path).to_pandas()
    elif path.suffix in (".jsonl", ".json"):
        try:
            frame = pd.read_json(path, lines=path.suffix == ".jsonl")
        except ValueError as exc:
            raise UserError(f"{path}: not valid JSON lines: {exc}") from None
    else:
        raise UserError(f"{path}: score a dataset folder, a .parquet or a .jsonl file")
    if "response" not in frame:
        raise UserError(f"{path}: needs a 'response' column (and optionally 'context', a list of {{role, content}})")
    if frame["response"].isna().any():
        row = int(np.flatnonzero(frame["response"].isna())[0])
        raise UserError(f"{path}: row {row + 1}: 'response' is empty")
    if "context" not in frame:
        frame["context"] = [[] for _ in range(len(frame))]
    frame["context"] = [_as_messages(c, path, i) for i, c in enumerate(frame["context"])]
    return frame


def _as_messages(context, path: Path, row: int) -> list[dict]:
    if context is None or (isinstance(context, float) and np.isnan(context)):
        return []
    if isinstance(context, str):
        return [{"role": "user", "content": context}]
    messages = list(context)
    for m in messages:
        if not isinstance(m, dict) or "content" not in m or "role" not in m:
            raise UserError(f"{path}: row {row + 1}: context must be a string or a list of {{role, content}}")
    return messages


def score_examples(model_dir: str | Path, data: str | Path, out: str | Path, *, batch_size: int = 64,
                   overwrite: bool = False, progress: bool | None = None, trust_remote_code: bool = False) -> int:
    """Score every example of ``data`` with the reward model in ``model_dir``; write Parquet to ``out``.

    ``trust_remote_code``: allow a base that ships its own code (the caller's decision, never the folder's)."""
    out = Path(out)
    _check_score_file(out, overwrite, [model_dir, data])
    frame = read_examples(Path(data))
    model, tokenizer, meta = load_reward_model(model_dir, trust_remote_code=trust_remote_code)
    ids = encode(tokenizer, frame["context"], frame["response"], meta["max_length"])
    with tqdm(total=len(ids), desc="reward score", unit="ex", disable=None if progress is None else not progress) as bar:
        scores, reasons = score(model, ids, tokenizer.pad_token_id, batch_size, progress=bar.update)
    keep = [c for c in ("example_id", "preference_id", "conversation_id", "user_id") if c in frame]
    table = {c: frame[c].to_numpy() for c in keep}
    table["score"], table["p_good"] = scores, ev.sigmoid(scores).astype(np.float32)
    for i, name in enumerate(meta["reasons"]):
        table[f"reason_{name}"] = ev.sigmoid(reasons[:, i]).astype(np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    pq.write_table(pa.table(table).replace_schema_metadata(SCORE_MARK), partial)
    partial.replace(out)
    return len(frame)


SCORE_MARK = {b"rlhf_organic": b"reward score"}  # in the Parquet metadata: a file --overwrite may replace


def _check_score_file(out: Path, overwrite: bool, inputs) -> None:
    """The score file's version of ``check_free``: never over or inside an input, never a folder, and
    with ``overwrite`` only a file this command wrote (its Parquet metadata says so)."""
    if (why := overlap(out, [("input", Path(p)) for p in inputs])) is not None:
        raise UserError(why)
    if out.is_dir():
        raise UserError(f"{out} is a folder; --out names the Parquet file to write")
    if not out.exists():
        return
    if not overwrite:
        raise UserError(f"{out} already exists; choose another --out or pass --overwrite")
    try:
        metadata = pq.read_schema(out).metadata or {}
    except (OSError, pa.ArrowException):
        metadata = {}
    if metadata.get(b"rlhf_organic") != SCORE_MARK[b"rlhf_organic"]:
        raise UserError(f"{out} is not a score file written by rlhf-organic, so --overwrite does not replace it; "
                        "choose another --out")
