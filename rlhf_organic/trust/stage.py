"""``rlhf-organic trust``: score every user of a dataset with one scheme and write the trust folder.

Trust folder: ``users.parquet`` (user_id, trust, n_feedback, n_labels, the scheme's evidence),
``examples.parquet`` (one row per thumbs-bearing example: example_id, user_id, conversation_id,
thumbs, weight, evidence), ``preferences.parquet`` (preference_id, user_id, weight) when the
dataset has preferences, ``metrics.json``, ``trust.png``. Written under a temporary name and
renamed when complete.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from ..atomic import atomic_dir, check_free
from ..errors import UserError
from ..simulator.ground_truth import EXAMPLES, PREFERENCES, USERS, truth_file
from .config import TrustSection
from .data import FeedbackData, load_feedback
from .flips import flip_rates
from .metrics import trust_metrics
from .plot import plot_trust
from .reference import NgramClassifier
from .scheme import TrustContext, TrustResult
from .schemes import SCHEMES

MIN_GOLD_PER_CLASS = 10  # clean labels of each class needed before thresholds are chosen on them


def run_scheme(data: FeedbackData, settings: TrustSection, ctx: TrustContext, log=print) -> tuple[TrustResult, dict]:
    """(result, the scheme config actually used): with ``select_on_gold``, its threshold chosen first."""
    contract = SCHEMES[settings.scheme]
    if problem := _degenerate(data, contract.judges_users):
        raise UserError(problem)
    cfg = settings.scheme_config()
    if settings.select_on_gold and contract.tune:
        cfg = select_on_gold(data, contract, cfg, contract.tune, ctx, log)
    result = contract.compute(data, cfg, ctx)
    _check(result, data, contract.name, label_weights=contract.label_weights)
    return result, cfg.model_dump()


def _check(result: TrustResult, data: FeedbackData, scheme: str, *, label_weights: bool = True) -> None:
    """Trust and weights are finite and in [0, 1], one per user / example, and a scheme whose contract says
    it weighs no label apart from its user gives each label its user's trust: a failure here is a bug."""
    arrays = [("trust", result.trust, data.n_users), ("weight", result.weight, data.n_examples)]
    if result.preference_weight is not None:
        arrays.append(("preference_weight", result.preference_weight, len(data.preference_ids)))
    for name, values, n in arrays:
        values = np.asarray(values, np.float64)
        if values.shape != (n,) or not np.all(np.isfinite(values)) or values.min(initial=0) < 0 or values.max(initial=0) > 1:
            raise RuntimeError(f"scheme {scheme} produced an invalid {name} array (shape {values.shape}, expected {n})")
    if not label_weights:
        users = np.asarray(data.user)
        known = users >= 0
        if not np.array_equal(np.asarray(result.weight, np.float64)[known], np.asarray(result.trust, np.float64)[users[known]]):
            raise RuntimeError(f"scheme {scheme} broke its contract: label_weights=False, yet a label's weight "
                               "differs from its user's trust (SchemeContract.label_weights)")


def select_on_gold(data: FeedbackData, module, cfg, tune, ctx, log):
    """The config whose threshold gives the best downstream accuracy on the clean (gold) labels.

    For each candidate value the downstream text classifier is trained on the feedback weighted by
    the scheme (examples that have a gold label are held out) and scored on the gold labels, as the
    helpers/trolls study chose its thresholds on a clean validation set.
    """
    field, candidates = tune
    counts = np.bincount(data.gold_label, minlength=2) if len(data.gold_label) else np.zeros(2, int)
    if counts.min() < MIN_GOLD_PER_CLASS:
        log(f"[trust] select_on_gold: only {counts[1]} good / {counts[0]} bad clean labels "
            f"(need {MIN_GOLD_PER_CLASS} of each); keeping {field}={getattr(cfg, field)}")
        return cfg
    gold_ids = set(data.gold_example_ids.tolist())  # np.isin on object arrays compares every pair
    held = np.fromiter((e in gold_ids for e in data.example_ids), bool, data.n_examples)
    clf = NgramClassifier.from_config(ctx.reference)
    x, x_gold = ctx.features(data), clf.features(data.gold_text)
    scores = {}
    for value in candidates:
        trial = cfg.model_copy(update={field: value})
        weight = module.compute(data, trial, ctx).weight * ~held
        pred = clf.fit(x, data.label, weight).predict_proba(x_gold) >= 0.5
        scores[value] = float(np.mean(pred == data.gold_label))
    best = max(candidates, key=lambda v: (scores[v], -abs(v - getattr(cfg, field))))
    log(f"[trust] select_on_gold: {field}={best} (accuracy on {len(data.gold_label)} clean labels: "
        + ", ".join(f"{v}: {s:.3f}" for v, s in scores.items()) + ")")
    return cfg.model_copy(update={field: best})


def load_ground_truth(path: str | Path, data: FeedbackData) -> dict:
    """Ground truth aligned with ``data``: per user is_troll / user_type, per example corrupted.

    ``path`` is a Parquet file with ``user_id`` and ``is_troll`` (``user_type`` optional), or a
    simulation folder. A ``ground_truth_examples.parquet`` beside it (``example_id``, ``corrupted``)
    adds the example-level numbers.
    """
    path = Path(path)
    users_file = truth_file(path, USERS)
    if not users_file.is_file():
        raise UserError(f"ground truth not found: {users_file}")
    table = pq.read_table(users_file)
    missing = {"user_id", "is_troll"} - set(table.column_names)
    if missing:
        raise UserError(f"{users_file}: ground truth needs columns user_id and is_troll; missing {sorted(missing)}")
    index = {u: i for i, u in enumerate(table.column("user_id").to_pylist())}
    rows = np.array([index.get(u, -1) for u in data.user_ids], np.int64)
    is_troll = np.asarray(table.column("is_troll").to_pylist(), np.float64)
    truth = {"is_troll": np.where(rows >= 0, is_troll[np.maximum(rows, 0)], np.nan) if len(is_troll) else np.full(len(rows), np.nan)}
    if "user_type" in table.column_names:
        types = np.asarray(table.column("user_type").to_pylist(), dtype=object)
        truth["user_type"] = np.where(rows >= 0, types[np.maximum(rows, 0)] if len(types) else None, "unknown")
    examples_file = truth_file(path, EXAMPLES)
    if examples_file.is_file():
        have = pq.read_schema(examples_file).names
        ex = pq.read_table(examples_file, columns=["example_id"] + [c for c in ("corrupted", "poisoned") if c in have])
        ids = ex.column("example_id").to_pylist()
        for column in ex.column_names[1:]:
            known = dict(zip(ids, ex.column(column).to_pylist()))
            truth[column] = np.array([np.nan if known.get(e) is None else float(known[e]) for e in data.example_ids], np.float64)
    prefs_file = truth_file(path, PREFERENCES)
    if len(data.preference_ids) and prefs_file.is_file() and "poisoned" in pq.read_schema(prefs_file).names:
        prefs = pq.read_table(prefs_file, columns=["preference_id", "poisoned"])
        known = dict(zip(prefs.column("preference_id").to_pylist(), prefs.column("poisoned").to_pylist()))
        truth["preference_poisoned"] = np.array(
            [np.nan if known.get(p) is None else float(known[p]) for p in data.preference_ids], np.float64)
    return truth


def _column(values) -> pa.Array:
    values = np.asarray(values)
    if values.dtype.kind == "f":
        return pa.array(values, mask=~np.isfinite(values))  # NaN evidence (no data) -> null
    return pa.array(values)


def preference_weights(data: FeedbackData, result: TrustResult) -> np.ndarray:
    """Each A/B choice's weight: the scheme's own when it gives one, else its user's trust."""
    if result.preference_weight is not None:
        return np.asarray(result.preference_weight, np.float64)
    return _per_label(result.trust, data.preference_user, missing=1.0)


def _tables(data: FeedbackData, result: TrustResult) -> dict[str, pa.Table]:
    n_feedback = data.user_counts.get("n_feedback", data.per_user_count())
    users = {
        "user_id": pa.array(data.user_ids.tolist(), pa.string()),
        "trust": pa.array(np.asarray(result.trust, np.float64)),
        "n_feedback": pa.array(np.asarray(n_feedback, np.int64)),
        "n_labels": pa.array(data.per_user_count()),
        **{k: _column(v) for k, v in result.user_evidence.items()},
    }
    examples = {
        "example_id": pa.array(data.example_ids.tolist(), pa.string()),
        "user_id": _user_id_column(data.user_ids, data.user),
        "conversation_id": pa.array(data.conversation_ids.tolist(), pa.string()),
        "thumbs": pa.array(np.where(data.label > 0, 1, -1).astype(np.int8)),
        "weight": pa.array(np.asarray(result.weight, np.float64)),
        **{k: _column(v) for k, v in result.example_evidence.items()},
    }
    out = {"users": pa.table(users), "examples": pa.table(examples)}
    if len(data.preference_ids):
        out["preferences"] = pa.table({
            "preference_id": pa.array(data.preference_ids.tolist(), pa.string()),
            "user_id": _user_id_column(data.user_ids, data.preference_user),
            "weight": pa.array(preference_weights(data, result)),
            **({"flip_rate": pa.array(_per_label(result.user_evidence["flip_rate"], data.preference_user, missing=0.0))}
               if "flip_rate" in result.user_evidence else {}),
        })
    return out


def compute_trust(
    dataset: str | Path,
    out: str | Path,
    settings: TrustSection,
    *,
    seed: int = 0,
    ground_truth: str | Path | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Score the users of ``dataset`` with ``settings.scheme``; write the trust folder ``out``; return metrics."""
    out = Path(out)
    check_free(out, overwrite, [dataset, ground_truth or settings.ground_truth])
    ground_truth = ground_truth or settings.ground_truth
    if settings.engine == "ray":  # a wrong address or a missing Ray fails here, before the dataset is read
        from ..data.ray_engine import connect

        connect(settings.ray_address)
    started = time.perf_counter()
    judges_users = _judges_users(settings)
    data = load_feedback(dataset, anonymous=not judges_users)
    if problem := _degenerate(data, judges_users):
        raise UserError(f"{dataset}: {problem}")
    loaded = time.perf_counter()
    log(f"[trust] {settings.scheme}: {data.n_examples} labels from {int((data.per_user_count() > 0).sum())} "
        f"of {data.n_users} users")
    bar = tqdm(desc=f"trust ({settings.scheme})", unit="fold", disable=None if progress is None else not progress)
    try:
        predict = predict_texts = None
        if settings.engine == "ray":  # the same reference, its folds fitted and predicted on Ray
            from .ray_reference import predictor

            predict, predict_texts = predictor(settings.reference, seed, settings.ray_address, progress=bar.update)
        ctx = TrustContext(settings.reference, seed=seed, progress=bar.update, predict=predict, predict_texts=predict_texts)
        result, cfg = run_scheme(data, settings, ctx, log)
    finally:
        bar.close()
    flips = _add_flip_rates(data, settings, ctx, result)
    computed = time.perf_counter()
    if judges_users:  # the notes are about what a scheme that judges users can learn from
        result.notes.extend(_warnings(data))
    truth = load_ground_truth(ground_truth, data) if ground_truth else {}
    if "is_troll" in truth:
        known = truth["is_troll"][~np.isnan(truth["is_troll"])]
        if len(known) and (known.min() == known.max()):
            result.notes.append("the ground truth has users of one kind only: troll AUC and precision are undefined (null)")
    n_feedback = data.user_counts.get("n_feedback", data.per_user_count())
    metrics = {
        "scheme": settings.scheme,
        "engine": settings.engine,
        "config": cfg,
        "reference": settings.reference.model_dump(),
        "seed": seed,
        "notes": result.notes,
        **trust_metrics(
            result.trust, result.weight, n_feedback, cfg["cut"],
            user_is_troll=truth.get("is_troll"),
            example_user_is_troll=_per_label(truth["is_troll"], data.user, missing=np.nan) if "is_troll" in truth else None,
            example_corrupted=truth.get("corrupted"), example_poisoned=truth.get("poisoned"),
        ),
    }
    if "preference_poisoned" in truth:  # the weight left on planted A/B choices
        planted = np.nan_to_num(truth["preference_poisoned"], nan=0.0) > 0.5
        weights = preference_weights(data, result)
        metrics["poisoned_preference_weight_kept"] = float(np.mean(weights[planted])) if planted.any() else None
    if "user_type" in truth:
        has = np.asarray(n_feedback) > 0
        types = truth["user_type"]
        metrics["mean_trust_by_type"] = {
            str(t): float(np.mean(result.trust[has & (types == t)])) for t in sorted(set(types[has]))
        }
        if flips is not None:
            flips["mean_by_type"] = {str(t): float(np.mean(flips["rates"][has & (types == t)])) for t in sorted(set(types[has]))}
    if flips is not None:
        metrics["flip_rates"] = {k: v for k, v in flips.items() if k != "rates"}
    metrics["seconds"] = {"load": round(loaded - started, 3), "scheme": round(computed - loaded, 3)}

    with atomic_dir(out, kind="trust") as tmp:
        for name, table in _tables(data, result).items():
            pq.write_table(table, tmp / f"{name}.parquet", compression="zstd")
        has = np.asarray(n_feedback) > 0
        plot_trust(tmp / "trust.png", np.asarray(result.trust)[has],
                   truth["user_type"][has] if "user_type" in truth else None,
                   f"trust: {settings.scheme} ({int(has.sum())} users with feedback)")
        metrics["seconds"]["total"] = round(time.perf_counter() - started, 3)
        (tmp / "metrics.json").write_bytes(orjson.dumps(metrics, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    for note in result.notes:
        log(f"[trust] {note}")
    return metrics


def _add_flip_rates(data: FeedbackData, settings: TrustSection, ctx: TrustContext, result: TrustResult) -> dict | None:
    """Each user's label-flip rate (``flips.py``) into the result's evidence (``flip_rate`` in users.parquet,
    examples.parquet and preferences.parquet), for schemes that consult the held-out reference (its
    predictions are cached: this costs no refit). Returns the summary for metrics.json, or None."""
    if not SCHEMES[settings.scheme].reference or not _judges_users(settings):
        return None
    rates, reference_error = flip_rates(ctx.held_out(data), data.label, data.user, data.n_users, result.trust)
    result.user_evidence["flip_rate"] = rates
    result.example_evidence["flip_rate"] = _per_label(rates, data.user, missing=0.0)
    has = data.per_user_count() > 0
    return {"rates": rates, "reference_disagreement": reference_error,
            "mean": float(rates[has].mean()) if has.any() else None}


def _judges_users(settings: TrustSection) -> bool:
    """Whether the scheme scores users from their labels (every scheme but ``uniform``, which needs no users)."""
    return SCHEMES[settings.scheme].judges_users


def _per_label(per_user, user: np.ndarray, missing: float) -> np.ndarray:
    """A per-user array spread over labels (or A/B choices) by their user index; ``missing`` for those
    without a user (index -1)."""
    out = np.full(len(user), missing, np.float64)
    known = user >= 0
    out[known] = np.asarray(per_user, np.float64)[user[known]]
    return out


def _user_id_column(user_ids: np.ndarray, user: np.ndarray) -> pa.Array:
    """The user id of every label (or A/B choice) by its user index; null for those without a user."""
    return pa.array([user_ids[u] if u >= 0 else None for u in user], pa.string())


def _degenerate(data: FeedbackData, judges_users: bool) -> str | None:
    if not judges_users:  # weight 1 for everything: needs neither users nor thumbs, only some feedback
        if data.n_examples == 0 and len(data.preference_ids) == 0:
            return "the dataset has no feedback: no thumbs up/down and no A/B choices"
        return None
    if data.n_users == 0:
        return ("the dataset has no users (records without a user_id): trust schemes judge users; "
                "trust.scheme: uniform weights every label 1")
    if data.n_examples == 0:
        return ("no thumbs up/down in the dataset: trust schemes judge users by their feedback "
                "(A/B choices alone are weighted by trust.scheme: uniform only)")
    return None


def _warnings(data: FeedbackData) -> list[str]:
    raters = int((data.per_user_count() > 0).sum())
    notes = []
    if raters < 2:
        notes.append(f"only {raters} user with labels: agreement-based trust has no one else to learn from "
                     "(the reference predicts the base rate); behaviour evidence still counts")
    if len(np.unique(data.label)) < 2:
        notes.append("every label is a thumbs " + ("up" if data.label[0] else "down")
                     + ": the reference cannot learn what separates good replies from bad ones")
    return notes


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def format_metrics(metrics: dict) -> str:
    """The printed table of one trust run."""
    rows = [
        ("scheme", metrics["scheme"]),
        ("users with feedback", metrics["users_with_feedback"]),
        ("labels", metrics["examples"]),
        ("mean trust", metrics["mean_trust"]),
        (f"distrusted users (trust < {metrics['config']['cut']})", metrics["distrusted_users"]),
        ("label weight kept", metrics["weight_kept"]),
    ]
    for level in ("user", "example"):
        if level in metrics:
            m = metrics[level]
            rows += [(f"{level}: troll AUC" if level == "user" else "example: corrupted-label AUC", m["auc"]),
                     (f"{level}: precision / recall", f"{_fmt(m['precision'])} / {_fmt(m['recall'])}")]
    for key in ("helper_weight_kept", "troll_weight_kept", "poisoned_weight_kept", "poisoned_preference_weight_kept"):
        if key in metrics:
            rows.append((key.replace("_", " "), metrics[key]))
    for user_type, value in metrics.get("mean_trust_by_type", {}).items():
        rows.append((f"mean trust: {user_type}", value))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {_fmt(v)}" for k, v in rows)
