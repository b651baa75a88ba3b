"""The simulator's ground-truth files, and where to find them from what a user passes as ``ground_truth``:
a simulation folder, or its users file (``ground_truth.parquet``, whatever it is named) with the other
files beside it.

- ``ground_truth.parquet``: one row per user (``user_id``, ``user_type``, ``is_troll``, ...);
- ``ground_truth_examples.parquet``: one row per bot reply (``example_id``, ``quality``, ``is_good``, ...);
- ``ground_truth_preferences.parquet``: one row per A/B choice, when the simulation made them.
"""

from __future__ import annotations

from pathlib import Path

USERS = "ground_truth.parquet"
EXAMPLES = "ground_truth_examples.parquet"
PREFERENCES = "ground_truth_preferences.parquet"


def truth_file(ground_truth: Path | None, name: str) -> Path | None:
    """The ground-truth file ``name`` (one of ``USERS``, ``EXAMPLES``, ``PREFERENCES``): in the simulation
    folder ``ground_truth``, or beside the users file ``ground_truth`` (which is itself the users file,
    whatever its name). None without ground truth."""
    if ground_truth is None:
        return None
    if ground_truth.is_dir():
        return ground_truth / name
    return ground_truth if name == USERS else ground_truth.parent / name
