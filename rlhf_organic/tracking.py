"""Experiment tracking (``output.report_to``): each stage's metrics, time and memory, and the training
loss curves of the reward model and the policy, sent to tensorboard, Weights & Biases or trackio.

They are logged when a stage completes (from its metrics and ``history.json``), so a reused stage is
logged the same way as a computed one. ``auto`` uses tensorboard when it is installed and nothing
otherwise; a tracker named explicitly but not installed is an error before any work starts.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

from .errors import UserError

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}


def flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts as ``a/b/c`` keys (booleans and strings left out)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


class Tracker:
    """Fans every call out to the chosen backends (none at all is a valid, silent tracker)."""

    def __init__(self, backends: list) -> None:
        self.backends = backends

    def log_stage(self, number: int, name: str, marker: dict, folder: Path) -> None:
        if not self.backends:
            return
        scalars = flatten({"metrics": marker.get("metrics") or {}}, name)
        scalars.update({f"{name}/seconds": marker.get("seconds", 0.0), f"{name}/peak_rss_mb": marker.get("peak_rss_mb", 0)})
        curve = []
        history = folder / "history.json"
        if history.is_file():
            curve = [(row["step"], row["loss"]) for row in json.loads(history.read_text()) if "loss" in row and not row.get("skipped")]
        for backend in self.backends:
            backend.log(scalars, number, f"{name}/train_loss", curve)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()


class _TensorBoard:
    def __init__(self, folder: Path, recipe_yaml: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder))
        self.writer.add_text("recipe", "```\n" + recipe_yaml + "\n```")

    def log(self, scalars, step, curve_name, curve) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        for s, loss in curve:
            self.writer.add_scalar(curve_name, loss, s)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _RunLogger:
    """wandb and trackio share the ``init(project, name, config)`` / ``log(dict)`` / ``finish()`` shape.
    Stage metrics go to a summary step each; loss curves are logged point by point under their own key."""

    def __init__(self, module_name: str, project: str, name: str, config: dict, folder: Path) -> None:
        import importlib

        self.module = importlib.import_module(module_name)
        kwargs = {"dir": str(folder)} if module_name == "wandb" else {}
        self.run = self.module.init(project=project, name=name, config=config, **kwargs)

    def log(self, scalars, step, curve_name, curve) -> None:
        for s, loss in curve:
            self.module.log({curve_name: loss, f"{curve_name}_step": s})
        self.module.log(scalars)

    def close(self) -> None:
        self.module.finish()


def resolve(report_to) -> list[str]:
    """The tracker names to use for a ``report_to`` setting; a named one not installed is an error."""
    if report_to == "none":
        return []
    if report_to == "auto":
        return ["tensorboard"] if importlib.util.find_spec("tensorboard") else []
    missing = [t for t in report_to if importlib.util.find_spec(PACKAGES[t]) is None]
    if missing:
        raise UserError(f"output.report_to asks for {', '.join(missing)}, which is not installed: "
                        f"pip install {' '.join(PACKAGES[t] for t in missing)} (or set output.report_to: none)")
    return list(dict.fromkeys(report_to))


def open_tracker(names: list[str], out: Path, recipe, log: Callable[[str], None] = print) -> Tracker:
    """A tracker writing to the backends ``names`` (from ``resolve``) for the run folder ``out``."""
    from .recipe import dump_recipe

    backends = []
    for name in names:
        if name == "tensorboard":
            backends.append(_TensorBoard(out / "tensorboard", dump_recipe(recipe)))
            log(f"[track] tensorboard: tensorboard --logdir {out / 'tensorboard'}")
        else:
            backends.append(_RunLogger(name, "rlhf_organic", recipe.name, recipe.model_dump(mode="json"), out))
    return Tracker(backends)
