"""Experiment tracking (``output.report_to``): each stage's metrics, time and memory, and the training
loss curves of the reward model and the policy, sent to tensorboard, Weights & Biases or trackio.

Training losses are logged live, step by step (``training.fit`` calls ``log_training_step``); a stage's
metrics when it completes. A reused stage logs its metrics and, from ``history.json``, its loss curve. ``auto`` uses tensorboard when it is installed and nothing
otherwise; a tracker named explicitly but not installed is an error before any work starts.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from .errors import UserError

# dicts keyed by text from the data (free-text dislike reasons, reject reasons, file names): never
# turned into metric names sent to a tracker
PRIVATE = {"dislike_reasons", "reject_reasons", "inputs"}
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}


def flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts as ``a/b/c`` keys (booleans and strings left out)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if key in PRIVATE:
            continue
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
        self.steps: dict[str, int] = {}

    def log_step(self, stage: str, loss: float, parts: dict) -> None:
        """One training step of ``stage`` (every ``fit`` call of the stage continues the same curve)."""
        if not self.backends:
            return
        self.steps[stage] = step = self.steps.get(stage, 0) + 1
        scalars = {f"{stage}/train/loss": loss}
        scalars.update({f"{stage}/train/{k}": float(v) for k, v in parts.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
        for backend in self.backends:
            backend.log(scalars, step, f"{stage}/train/step")

    def log_stage(self, number: int, name: str, marker: dict, folder: Path) -> None:
        """A completed stage's metrics, time and memory; a reused stage's loss curve from its history."""
        if not self.backends:
            return
        if marker.get("reused") and (folder / "history.json").is_file():
            for row in json.loads((folder / "history.json").read_text()):
                if "loss" in row and not row.get("skipped"):
                    self.log_step(name, row["loss"], {})
        scalars = flatten({"metrics": marker.get("metrics") or {}}, name)
        scalars.update({f"{name}/seconds": marker.get("seconds", 0.0), f"{name}/peak_rss_mb": marker.get("peak_rss_mb", 0)})
        for backend in self.backends:
            backend.log(scalars, number, "pipeline/stage")

    def close(self) -> None:
        for backend in self.backends:
            backend.close()


_live: ContextVar["tuple[Tracker, str] | None"] = ContextVar("rlhf_organic_live_tracker", default=None)


@contextmanager
def live(tracker: Tracker, stage: str):
    """Within the block, ``log_training_step`` sends each training step of ``stage`` to ``tracker``."""
    token = _live.set((tracker, stage))
    try:
        yield
    finally:
        _live.reset(token)


def log_training_step(loss: float, parts: dict) -> None:
    """Called by ``training.fit`` after every step; a no-op outside a tracked pipeline stage."""
    current = _live.get()
    if current is not None:
        current[0].log_step(current[1], loss, parts)


class _TensorBoard:
    def __init__(self, folder: Path, recipe_yaml: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder))
        self.writer.add_text("recipe", "```\n" + recipe_yaml + "\n```")

    def log(self, scalars: dict, step: int, step_name: str) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _RunLogger:
    """wandb and trackio share the ``init(project, name, config)`` / ``log(dict)`` / ``finish()`` shape; their
    own step counter is global, so each dict carries its own x-axis (``<stage>/train/step``, ``pipeline/stage``)."""

    def __init__(self, module_name: str, project: str, name: str, config: dict, folder: Path) -> None:
        import importlib

        self.module = importlib.import_module(module_name)
        kwargs = {"dir": str(folder)} if module_name == "wandb" else {}
        self.run = self.module.init(project=project, name=name, config=config, **kwargs)

    def log(self, scalars: dict, step: int, step_name: str) -> None:
        self.module.log({**scalars, step_name: step})

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
