"""``rlhf-organic inspect``: what is in an ingested dataset, in numbers a person can read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from ..errors import UserError
from .dataset_files import read_table, table_path
from .reasons import NONE_GIVEN, public_reasons

FEEDBACK_BUCKETS = ((0, 0), (1, 1), (2, 5), (6, 10), (11, 50), (51, None))


def _share(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def inspect_dataset(path: str | Path, *, show_user_text: bool = False, how_to_show: str = "--show-user-text") -> dict:
    """Counts, feedback rates, dislike reasons, users by amount of feedback, adversarial share.

    Dislike reasons other than the formats' labels are text a user typed: counted together (under a
    note saying ``how_to_show`` them) unless ``show_user_text``."""
    path = Path(path)
    summary_file = path / "summary.json"
    if not summary_file.is_file():
        raise UserError(f"{path} is not an ingested dataset (no summary.json); run `rlhf-organic ingest` first")
    summary = json.loads(summary_file.read_text())
    examples = read_table(table_path(path, "examples"), columns=["thumbs", "dislike_reason"])
    n_examples = examples.num_rows
    down = examples.filter(pc.equal(examples.column("thumbs"), -1))
    reasons = pc.value_counts(down.column("dislike_reason").fill_null(NONE_GIVEN)).to_pylist()
    reasons = {r["values"]: r["counts"] for r in sorted(reasons, key=lambda r: -r["counts"])}
    n_feedback = read_table(table_path(path, "users"), columns=["n_feedback"]).column("n_feedback").to_numpy()
    buckets = {}
    for low, high in FEEDBACK_BUCKETS:
        label = str(low) if low == high else f"{low}+" if high is None else f"{low}-{high}"
        inside = (n_feedback >= low) & (True if high is None else n_feedback <= high)
        buckets[label] = int(np.sum(inside))
    n_conv = summary["conversations"]
    return {
        "dataset": str(path),
        "counts": {k: summary[k] for k in (
            "conversations", "messages", "examples", "thumbs_up", "thumbs_down", "preferences",
            "gold_labels", "users", "rejected",
        )},
        "feedback_rates": {
            "thumbs_up_per_example": _share(summary["thumbs_up"], n_examples),
            "thumbs_down_per_example": _share(summary["thumbs_down"], n_examples),
            "examples_with_thumbs": _share(summary["thumbs_up"] + summary["thumbs_down"], n_examples),
        },
        "dislike_reasons": reasons if show_user_text else public_reasons(reasons, how_to_show),
        "users_by_feedback": buckets,
        "median_feedback_per_user": float(np.median(n_feedback)) if len(n_feedback) else 0.0,
        "conversations_with_unsafe_user_turns": _share(summary["adversarial_conversations"], n_conv),
        "unsafe_user_messages": summary["unsafe_user_messages"],
        "reject_reasons": summary.get("reject_reasons", {}),
        "inputs": summary.get("inputs", []),
    }


def format_report(report: dict) -> str:
    """The inspect report as aligned plain text."""
    out = [f"dataset: {report['dataset']}", "", "counts"]
    out += [f"  {k:28s} {v:>12,}" for k, v in report["counts"].items()]
    out += ["", "feedback"]
    out += [f"  {k:28s} {v:>12.2%}" for k, v in report["feedback_rates"].items()]
    out += [f"  {'median per user':28s} {report['median_feedback_per_user']:>12g}"]
    out += ["", "dislike reasons"]
    out += [f"  {k:28s} {v:>12,}" for k, v in report["dislike_reasons"].items()] or ["  (no thumbs-down)"]
    out += ["", "users by amount of feedback (thumbs + A/B choices)"]
    out += [f"  {k:28s} {v:>12,}" for k, v in report["users_by_feedback"].items()]
    out += [
        "",
        "safety",
        f"  {'conversations with unsafe user turns':38s} {report['conversations_with_unsafe_user_turns']:>8.2%}",
        f"  {'unsafe user messages':38s} {report['unsafe_user_messages']:>8,}",
    ]
    if report["reject_reasons"]:
        out += ["", "rejected lines by reason"]
        out += [f"  {k[:60]:60s} {v:>8,}" for k, v in report["reject_reasons"].items()]
    return "\n".join(out)
