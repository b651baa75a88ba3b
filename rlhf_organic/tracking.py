"""Experiment tracking (``output.report_to``): each stage's metrics, time and memory, and the training
loss curves of every stage that trains (reward model, clean judge, tiny base, policy), sent to
tensorboard, Weights & Biases or trackio.

Training losses are logged live, step by step (``training.fit`` calls ``log_training_step``); a stage's
metrics when it completes. Every ``run`` (``--resume`` included) is one tracker run holding the whole
pipeline: a reused stage logs its metrics and, from ``history.json``, its loss curve, and a stage resumed
from a training checkpoint first logs the steps the checkpoint restored. ``auto`` uses tensorboard when it
is installed and nothing otherwise; a tracker named explicitly but not installed is an error before any
work starts, and so is one that cannot start a run (wandb without a login: ``WANDB_MODE=offline``).

Names and x-axes: a training step of stage ``s`` is ``s/train/loss`` (and ``s/train/<part>``) at step
``n``, counted from 1 over all ``fit`` calls of the stage; a completed stage's numbers are
``s/metrics/...``, ``s/seconds``, ``s/peak_rss_mb`` and ``s/reused`` (1 or 0) at the stage's position
in the pipeline (1, 2, ...). Each backend gets the step its own way: tensorboard and trackio as the
step of each point, wandb (whose step is one global counter) as the custom x-axes ``s/train/step`` and
``pipeline/stage`` (``define_metric``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from .errors import UserError

# dicts keyed by text from the data (free-text dislike reasons, reject reasons, file names): never
# turned into metric names sent to a tracker
PRIVATE = {"dislike_reasons", "reject_reasons", "inputs"}
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours in what a tracker prints
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}
PROJECT = "rlhf_organic"  # the wandb and trackio project (for wandb, WANDB_PROJECT when set)


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
        scalars = {f"{stage}/train/loss": float(loss)}
        scalars.update(flatten({k: v for k, v in parts.items() if k not in ("loss", "step")}, f"{stage}/train"))
        for backend in self.backends:
            backend.log(scalars, step, f"{stage}/train/step")

    def log_stage(self, number: int, name: str, marker: dict, folder: Path) -> None:
        """A completed stage's metrics, time and memory; a reused stage's loss curve from its history."""
        if not self.backends:
            return
        if marker.get("reused") and (folder / "history.json").is_file():
            for row in json.loads((folder / "history.json").read_text()):
                if "loss" in row and not row.get("skipped"):
                    self.log_step(name, row["loss"], row)
        scalars = flatten({"metrics": marker.get("metrics") or {}}, name)
        scalars.update({f"{name}/seconds": float(marker.get("seconds", 0.0)),
                        f"{name}/peak_rss_mb": float(marker.get("peak_rss_mb", 0)),
                        f"{name}/reused": float(bool(marker.get("reused")))})
        for backend in self.backends:
            backend.log(scalars, number, "pipeline/stage")

    def close(self, failed: bool = False) -> None:
        """Finish every backend's run (``failed``: the pipeline stopped on an error)."""
        errors = []
        for backend in self.backends:
            try:
                backend.close(failed)
            except Exception as exc:  # one tracker failing to finish must not keep the others open
                errors.append(exc)
        self.backends = []
        if errors and not failed:  # on a failed run, the pipeline's own error is the one to see
            raise errors[0]


_live: ContextVar[tuple[Tracker, str] | None] = ContextVar("rlhf_organic_live_tracker", default=None)


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

    def log(self, scalars: dict, step: int, axis: str) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self, failed: bool) -> None:
        self.writer.close()


@contextmanager
def _printed_to(log: Callable[[str], None], prefix: str):
    """What a library prints to stdout inside the block goes, line by line, to ``log`` after it."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            line = ANSI.sub("", line).rstrip()
            if line.strip():
                log(prefix + line)


class _WandB:
    """A wandb run; its step is one global counter, so each metric gets its x-axis by ``define_metric``."""

    def __init__(self, name: str, config: dict, folder: Path, log: Callable[[str], None]) -> None:
        import wandb

        kwargs = {} if os.environ.get("WANDB_DIR") else {"dir": str(folder)}  # the run folder unless set
        # console="off": wandb would otherwise upload everything the process prints
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or PROJECT, name=name, config=config,
                              settings=wandb.Settings(console="off"), reinit="create_new", **kwargs)
        self.defined: set[str] = set()
        settings = self.run.settings
        if settings.mode == "disabled":
            where = "disabled by WANDB_MODE"
        elif settings.mode in ("offline", "dryrun"):
            where = f"offline, in {settings.sync_dir}; upload it with: wandb sync {settings.sync_dir}"
        else:
            where = self.run.url
        log(f"[track] wandb: project {self.run.project}, run {self.run.name} ({where})")

    def log(self, scalars: dict, step: int, axis: str) -> None:
        if axis not in self.defined:
            self.run.define_metric(axis, hidden=True)
            self.defined.add(axis)
        for key in scalars:
            if key not in self.defined:
                self.run.define_metric(key, step_metric=axis)
                self.defined.add(key)
        self.run.log({**scalars, axis: step})

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class _Trackio:
    """A trackio run (stored in trackio's local database, ``TRACKIO_DIR``, unless trackio is told otherwise);
    trackio prints to stdout, which goes to the pipeline's log instead."""

    def __init__(self, name: str, config: dict, log: Callable[[str], None]) -> None:
        import trackio

        self.say = log
        with _printed_to(log, "[track] trackio: "):
            self.run = trackio.init(project=PROJECT, name=name, config=config)

    def log(self, scalars: dict, step: int, axis: str) -> None:
        self.run.log(scalars, step=step)

    def close(self, failed: bool) -> None:
        from trackio import context_vars

        with _printed_to(self.say, "[track] trackio: "):
            self.run.finish()
        if context_vars.current_run.get() is self.run:  # as trackio.finish() does: no second finish at exit
            context_vars.current_run.set(None)


HINTS = {"wandb": " (not logged in? `wandb login`, or WANDB_MODE=offline to log locally and `wandb sync` later)",
         "trackio": ""}


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


def open_tracker(names: list[str], out: Path, recipe, recipe_yaml: str, log: Callable[[str], None] = print) -> Tracker:
    """A tracker writing to the backends ``names`` (from ``resolve``) for the run folder ``out``;
    ``recipe_yaml`` is the resolved recipe (``recipe.dump_recipe``), shown by TensorBoard.

    In a multi-process run only the main process tracks. A tracker that cannot start its run is a
    ``UserError``, after the ones already started are closed.
    """
    from . import distributed

    if not names or not distributed.is_main():
        return Tracker([])
    backends = []
    try:
        for name in names:
            if name == "tensorboard":
                backends.append(_TensorBoard(out / "tensorboard", recipe_yaml))
                log(f"[track] tensorboard: tensorboard --logdir {out / 'tensorboard'}")
                continue
            try:
                if name == "wandb":
                    backends.append(_WandB(recipe.name, recipe.model_dump(mode="json"), out, log))
                else:
                    backends.append(_Trackio(recipe.name, recipe.model_dump(mode="json"), log))
            except Exception as exc:
                raise UserError(f"output.report_to: {name} could not start a run: {exc}{HINTS[name]}") from exc
    except BaseException:
        Tracker(backends).close(failed=True)
        raise
    return Tracker(backends)
