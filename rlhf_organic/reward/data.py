"""Reward-model training data: thumbs (pointwise) and A/B choices (pairwise), with trust weights.

Thumbs come from the dataset's ``examples.parquet`` (rows with ``thumbs`` set), A/B choices from
``preferences.parquet``. Weights come from a trust folder: ``examples.parquet`` (``example_id``,
``weight``) and ``preferences.parquet`` (``preference_id``, ``weight``). Without a trust folder
every weight is 1. The evaluation split holds out whole conversations (and whole A/B choices),
chosen by a seeded hash of the id, so it does not move when other rows are added.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.dataset_files import has_table, read_table, table_path, table_schema
from ..errors import UserError
from ..sequences import held_out
from ..trust.flips import CAP as FLIP_CAP

POINT_COLUMNS = ["example_id", "conversation_id", "user_id", "context", "response", "thumbs", "dislike_reason"]
PAIR_COLUMNS = ["preference_id", "user_id", "context", "chosen", "rejected"]


class RewardDataError(UserError):
    """Reward-model training data that cannot be used as it is."""


@dataclass
class RewardData:
    """``point``: one row per thumbs (label 1 liked / 0 disliked, weight); ``pairs``: one row per A/B choice."""

    point: pd.DataFrame
    pairs: pd.DataFrame

    def __len__(self) -> int:
        return len(self.point) + len(self.pairs)


def _read(path: Path, columns: list[str], filters=None) -> pd.DataFrame:
    """``columns`` of a table, one file or partitioned (rows matching the pyarrow expression ``filters``),
    or a clear error."""
    if not has_table(path):
        raise RewardDataError(f"{path} not found")
    have = table_schema(path).names
    missing = [c for c in columns if c not in have]
    if missing:
        raise RewardDataError(f"{path}: missing column(s) {', '.join(missing)}")
    return read_table(path, columns=columns, filters=filters).to_pandas()


def _weights(trust_dir: Path, file: str, key: str, ids: pd.Series, column: str = "weight", high: float = 1.0) -> np.ndarray:
    """The trust folder's ``column`` (a number in [0, ``high``]) for each of ``ids``."""
    path = trust_dir / file
    if not has_table(path):
        raise RewardDataError(f"weights file {path} not found (run `rlhf-organic trust` first, or train without --trust)")
    if column != "weight":
        if column not in table_schema(path).names:
            raise RewardDataError(f"{path} has no {column} column: the trust scheme that wrote it does not consult the "
                                  "held-out reference, so it estimates no label-flip rates (use an agreement-based "
                                  "scheme such as combined, or turn flip rates off)")
    table = _read(path, [key, column])
    values = table[column]
    if values.isna().any() or not values.between(0, high).all():
        bad = table[values.isna() | ~values.between(0, high)].iloc[0]
        raise RewardDataError(f"{path}: {column} must be a number in [0, {high:g}]; {key} {bad[key]!r} has {float(bad[column])}")
    weights = ids.map(table.set_index(key)[column])
    if weights.isna().any():
        raise RewardDataError(
            f"{path} has no {column} for {int(weights.isna().sum())} of {len(ids)} rows "
            f"(first: {key} {ids[weights.isna()].iloc[0]!r}); was the trust folder computed on this dataset?"
        )
    return weights.to_numpy(np.float64)


def load_reward_data(dataset: str | Path, trust_dir: str | Path | None = None, signals=("thumbs", "preferences"),
                     flip_rates: bool = False) -> RewardData:
    """The thumbs and A/B choices of an ingested dataset, each with its trust weight, and with ``flip_rates``
    its user's label-flip rate from the trust folder (column ``flip``; ``trust/flips.py``)."""
    dataset = Path(dataset)
    point = pd.DataFrame(columns=POINT_COLUMNS + ["label", "weight"])
    pairs = pd.DataFrame(columns=PAIR_COLUMNS + ["weight"])
    if "thumbs" in signals:
        import pyarrow.compute as pc

        # only rated rows: at BB3x size most examples have no thumbs, and their contexts are most of the bytes
        point = _read(table_path(dataset, "examples"), POINT_COLUMNS, filters=pc.field("thumbs").is_valid())
        point["label"] = (point["thumbs"] > 0).astype(np.float32)
    if "preferences" in signals and has_table(table_path(dataset, "preferences")):
        pairs = _read(table_path(dataset, "preferences"), PAIR_COLUMNS)
        same = pairs["chosen"] == pairs["rejected"]
        if same.any():
            raise RewardDataError(
                f"{dataset / 'preferences.parquet'}: {int(same.sum())} A/B choice(s) have identical chosen and rejected "
                f"texts (first: preference_id {pairs.loc[same, 'preference_id'].iloc[0]!r}); such a pair says nothing "
                "about which reply is better: remove them from the input"
            )
    if len(point) + len(pairs) == 0:
        wanted = " and ".join(signals)
        raise RewardDataError(f"{dataset}: no {wanted} to train a reward model on")
    if trust_dir is None:
        point["weight"], pairs["weight"] = 1.0, 1.0
    else:
        trust_dir = Path(trust_dir)
        # an empty table (a dataset without A/B choices) still gets its weight column
        point["weight"] = _weights(trust_dir, "examples.parquet", "example_id", point["example_id"]) if len(point) else 1.0
        pairs["weight"] = _weights(trust_dir, "preferences.parquet", "preference_id", pairs["preference_id"]) if len(pairs) else 1.0
    if flip_rates:
        if trust_dir is None:
            raise RewardDataError("label-flip rates come from a trust folder: train with trust weights, or turn flip rates off")
        point["flip"] = (_weights(trust_dir, "examples.parquet", "example_id", point["example_id"], "flip_rate", FLIP_CAP)
                         if len(point) else 0.0)
        pairs["flip"] = (_weights(trust_dir, "preferences.parquet", "preference_id", pairs["preference_id"], "flip_rate", FLIP_CAP)
                         if len(pairs) else 0.0)
    return RewardData(point, pairs)


def split(data: RewardData, fraction: float, seed: int) -> tuple[RewardData, RewardData]:
    """(train, eval): whole conversations and whole A/B choices held out."""
    p_eval = held_out(data.point["conversation_id"], fraction, seed) if len(data.point) else np.zeros(0, bool)
    q_eval = held_out(data.pairs["preference_id"], fraction, seed) if len(data.pairs) else np.zeros(0, bool)
    take = lambda df, m: df[m].reset_index(drop=True)  # noqa: E731
    return (
        RewardData(take(data.point, ~p_eval), take(data.pairs, ~q_eval)),
        RewardData(take(data.point, p_eval), take(data.pairs, q_eval)),
    )


def reason_vocabulary(point: pd.DataFrame) -> list[str]:
    """The dislike reasons seen on disliked examples that are one of the formats' labels, as written,
    sorted. Free text is left out: a logit per sentence a user typed learns nothing, and its name would
    carry that sentence into reward_model.json, metrics.json and every score file."""
    from ..data.reasons import known_reason

    disliked = point[(point["label"] == 0) & point["dislike_reason"].notna()]
    return sorted(r for r in set(disliked["dislike_reason"].astype(str)) if known_reason(r))


def reason_targets(point: pd.DataFrame, reasons: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(one-hot targets [n, len(reasons)], has_reason [n]): only disliked examples with a known reason count."""
    index = {r: i for i, r in enumerate(reasons)}
    targets = np.zeros((len(point), len(reasons)), np.float32)
    has = np.zeros(len(point), bool)
    for row, (label, reason) in enumerate(zip(point["label"], point["dislike_reason"])):
        if label == 0 and reason is not None and reason == reason and str(reason) in index:
            targets[row, index[str(reason)]] = 1.0
            has[row] = True
    return targets, has
