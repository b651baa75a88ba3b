"""Training checkpoints, so that a run killed in the middle of a stage (preemption, OOM, kill -9) resumes
from its last checkpoint instead of from the stage's start.

The pipeline opens a ``checkpointing(folder)`` context around each stage; every ``training.fit`` call
inside it gets its own subfolder (``fit-000``, ``fit-001``, ... in call order, which is deterministic for a
given stage fingerprint). A checkpoint holds what the rest of the optimisation depends on: the trainable
parameters, AdamW's state, the learning-rate schedule, every random number generator (torch, CUDA,
numpy's global one, Python's), the position in the step plan and the loss history. A finished ``fit`` is
marked ``done``: on resume the stage's code re-runs up to that call (deterministically), the call
restores its final state at once, and training goes on from the first unfinished call.

Format: ``step-NNNNNNN/`` with ``tensors.safetensors`` (parameters, optimizer moments, torch RNG) and
``state.json`` (everything else), written as ``.step-NNNNNNN.partial`` and renamed when complete: a
half-written checkpoint is never loaded. No pickle anywhere.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

_current: ContextVar[Checkpointer | None] = ContextVar("rlhf_organic_checkpointer", default=None)


@dataclass
class Checkpointer:
    folder: Path
    every_steps: int
    every_seconds: float
    calls: int = field(default=0)
    stage: str = "training"
    log: Callable[[str], None] = field(default=lambda message: None, repr=False)

    def next_fit(self) -> FitCheckpoint:
        what = self.stage if self.calls == 0 else f"{self.stage} (training part {self.calls + 1})"
        fit = FitCheckpoint(self.folder / f"fit-{self.calls:03d}", self.every_steps, self.every_seconds, what=what,
                            log=self.log)
        self.calls += 1
        return fit


@contextmanager
def checkpointing(folder: Path, every_steps: int = 200, every_minutes: float = 10.0, *, stage: str = "training",
                  log: Callable[[str], None] = lambda message: None):
    """Checkpoint every ``fit`` inside the block into ``folder`` (kept for the next attempt if the block dies).

    A ``fit`` that goes on from a checkpoint says so through ``log``: "resuming STAGE from step N of M"."""
    token = _current.set(Checkpointer(Path(folder), every_steps, every_minutes * 60, stage=stage, log=log))
    try:
        yield
    finally:
        _current.reset(token)


def next_fit() -> FitCheckpoint | None:
    """The checkpoint of the ``fit`` call starting now, or None outside ``checkpointing``."""
    checkpointer = _current.get()
    return checkpointer.next_fit() if checkpointer is not None else None


class FitCheckpoint:
    def __init__(self, folder: Path, every_steps: int, every_seconds: float, *, what: str = "training",
                 log: Callable[[str], None] = lambda message: None) -> None:
        self.folder, self.every_steps, self.every_seconds = folder, every_steps, every_seconds
        self.last_save = time.monotonic()
        self.what, self.log = what, log  # what a resumed fit's log line names, and where it goes

    def resumed(self, steps_done: int, steps: int) -> None:
        """Say where a resumed ``fit`` goes on from (a finished one is restored whole, and says so)."""
        if steps_done < steps:
            self.log(f"resuming {self.what} from step {steps_done} of {steps}")
        else:
            self.log(f"resuming {self.what}: all {steps} steps were done, restored from the checkpoint")

    def due(self, steps_done: int) -> bool:
        return steps_done % self.every_steps == 0 or time.monotonic() - self.last_save >= self.every_seconds

    def latest(self) -> Path | None:
        complete = sorted(self.folder.glob("step-*")) if self.folder.is_dir() else []
        return complete[-1] if complete else None

    def save(self, steps_done: int, params, optimizer, schedule, history: list[dict], *, done: bool = False,
             gather=None) -> None:
        """Write a checkpoint after ``steps_done`` steps (the main process only), then drop older ones.

        ``gather(tensor)``: the whole of a sharded tensor (FSDP, ``rlhf_organic.fsdp``); a collective, so then
        every process calls ``save`` and gathers, and the main process writes whole tensors."""
        from safetensors.torch import save_file

        from . import distributed

        self.last_save = time.monotonic()
        if not distributed.is_main() and gather is None:
            return
        whole = gather if gather is not None else (lambda t: t.detach().cpu().contiguous())
        tensors = {f"param.{i}": whole(p) for i, p in enumerate(params)}
        opt = optimizer.state_dict()
        for index, state in opt["state"].items():
            for key, value in state.items():
                tensors[f"optim.{index}.{key}"] = whole(torch.as_tensor(value))
        if not distributed.is_main():
            return
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
        np_state = np.random.get_state()
        state = {
            "steps_done": steps_done, "done": done, "history": history,
            "param_groups": opt["param_groups"],
            "schedule": schedule.state_dict(),
            "rng_python": _jsonable(random.getstate()),
            "rng_numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        }
        name = f"step-{steps_done:07d}"
        tmp = self.folder / f".{name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(tensors, str(tmp / "tensors.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state))
        final = self.folder / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in self.folder.glob("step-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)

    def restore(self, params, optimizer, schedule, *, place=None) -> tuple[int, list[dict]] | None:
        """Load the latest checkpoint into the live objects; returns (steps done, history) or None.

        ``place(whole, like)``: ``whole`` cut to this process's shard of ``like`` (FSDP); by default the
        whole tensor on ``like``'s device."""
        from safetensors.torch import load_file

        path = self.latest()
        if path is None:
            return None
        place = place if place is not None else (lambda value, like: value.to(like.device))
        tensors = load_file(str(path / "tensors.safetensors"))
        state = json.loads((path / "state.json").read_text())
        with torch.no_grad():
            for i, p in enumerate(params):
                saved = tensors[f"param.{i}"]
                if saved.shape != p.shape:
                    raise RuntimeError(f"checkpoint {path} does not fit this model (parameter {i}: {tuple(saved.shape)} "
                                       f"vs {tuple(p.shape)}); delete it to start the stage afresh")
                p.copy_(place(saved, p))
        opt_state: dict = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                opt_state.setdefault(int(index), {})[name] = place(value, params[int(index)]) if value.dim() else value
        optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(tensors["rng.torch"])
        if torch.cuda.is_available():
            cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
            if cuda:
                torch.cuda.set_rng_state_all(cuda)
        random.setstate(_tupled(state["rng_python"]))
        kind, keys, pos, has_gauss, cached = state["rng_numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
        return state["steps_done"], state["history"]


def _jsonable(value):
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tupled(value):
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value
