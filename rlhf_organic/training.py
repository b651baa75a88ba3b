"""The optimisation loop shared by the reward model and every policy method (plain torch, no Trainer).

``step_plan`` lays out the steps of a run: every item once per epoch, in shuffled steps; with
``group_by_length`` the items are sorted by length inside windows of 64 steps (far less padding) and
the steps shuffled again. ``Trainer`` runs AdamW with linear warm-up and decay and gradient clipping over
those steps; one ``Trainer`` can run several plans in turn (the rounds of an online method) with one
optimizer state and one schedule. ``fit`` is the one-plan case.

What is minimised is an ``Objective``: a step's loss written as sums over its items divided by totals of
the whole step (weight sums, token counts). A step goes through the model in micro-batches of
``micro_batch_size`` items: each micro-batch's loss is its sums over the step's totals, the gradients add up
over the micro-batches, and the step equals the unsplit step exactly (up to float rounding), whatever the
split. Memory follows the micro-batch, the optimisation the step (``train.batch_size``).

In a multi-process run (``rlhf_organic.distributed``: ``accelerate launch``, ``torchrun``) every process walks
the same plan and takes its share of each step, ``step[rank::world]``, in micro-batches; the totals are
summed over the processes before any loss is computed, and the gradients are summed across processes
before clipping, so every process takes the same optimizer step, equal to the one-process step, weighted
means and KTO's reference point included (``docs/distributed.md``). Under an FSDP launch the model is
sharded for the length of each plan (``rlhf_organic.fsdp``): the same steps, with the gradients summed by
FSDP's reduce-scatter instead of the all-reduce.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from . import checkpoint, tracking
from .errors import UserError


class NonFiniteError(UserError):
    """A NaN or infinite loss or gradient stopped training (``train.on_nonfinite: stop``)."""

GROUP_WINDOW = 64  # steps per length-sorting window


def plan_length(items: int, batch_size: int, epochs: float) -> int:
    """How many steps ``step_plan`` makes for ``items`` items (without building it)."""
    whole = math.ceil(epochs)
    per_epoch = math.ceil(items / batch_size)
    return max(1, round(whole * per_epoch * epochs / whole))


def epoch_steps(lengths: np.ndarray, batch_size: int, group_by_length: bool, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of steps: arrays of item indices covering every item once."""
    order = rng.permutation(len(lengths))
    if group_by_length:
        window = batch_size * GROUP_WINDOW
        order = np.concatenate([
            chunk[np.argsort(lengths[chunk], kind="stable")]
            for chunk in np.array_split(order, max(1, math.ceil(len(order) / window)))
        ])
    steps = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    if group_by_length:
        steps = [steps[i] for i in rng.permutation(len(steps))]
    return steps


def step_plan(lengths, batch_size: int, epochs: float, group_by_length: bool, rng: np.random.Generator) -> list[np.ndarray]:
    """The steps of ``epochs`` passes (a fraction cuts the last pass short)."""
    lengths = np.asarray(lengths)
    whole = math.ceil(epochs)
    plan = []
    for _ in range(whole):
        plan += epoch_steps(lengths, batch_size, group_by_length, rng)
    return plan[: max(1, round(len(plan) * epochs / whole))]


@dataclass(frozen=True)
class Objective:
    """A step's loss, written so that any split of the step adds up to the unsplit loss.

    ``totals(items) -> {name: float}``: sums over ``items`` that the loss divides by (weight sums, token
    counts, KTO's KL sum). The loop adds them up over the whole step (every micro-batch of every process),
    under ``torch.no_grad``, before any loss is computed.
    ``loss(items, totals) -> (tensor, parts)``: the micro-batch ``items``' share of the step's loss (its sums
    divided by the step's ``totals``); ``parts`` are floats for the history that add up over the step's
    micro-batches in the same way (a mean's share: sum over the micro-batch / the step's count).
    """

    totals: Callable[[np.ndarray], dict]
    loss: Callable[[np.ndarray, dict], tuple]


def micro_batches(items: np.ndarray, size: int | None) -> list[np.ndarray]:
    """``items`` cut into runs of ``size`` (all at once when None)."""
    if size is None or size >= len(items):
        return [items] if len(items) else []
    return [items[i: i + size] for i in range(0, len(items), size)]


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then linear decay to 0 at ``steps``."""
    return min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup)))


class Schedule:
    """The learning rate of every step of a ``Trainer``'s whole run (all of its plans): ``lr x lr_factor``.
    Its state is the number of steps taken, so that a checkpoint restores it."""

    def __init__(self, lr: float, steps: int, warmup_ratio: float):
        self.lr, self.steps = lr, max(1, steps)
        self.warmup = max(1, int(warmup_ratio * self.steps))
        self.last_epoch = 0

    def apply(self, optimizer) -> None:
        for group in optimizer.param_groups:
            group["lr"] = self.lr * lr_factor(self.last_epoch, self.steps, self.warmup)

    def step(self) -> None:
        self.last_epoch += 1

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.last_epoch = int(state["last_epoch"])


def fit(params: list[torch.nn.Parameter], plan: list[np.ndarray], objective: Objective, settings,
        progress: Callable | None = None, *, model: torch.nn.Module | None = None) -> list[dict]:
    """Minimise ``objective`` over ``plan`` with a fresh optimizer; returns the loss history (``Trainer.fit``)."""
    return Trainer(params, settings, len(plan), model=model).fit(plan, objective, progress)


class Trainer:
    """AdamW with a warm-up and decay schedule over ``steps`` optimizer steps, kept across ``fit`` calls.

    ``settings`` has lr, weight_decay, warmup_ratio, grad_clip, and optionally on_nonfinite and
    micro_batch_size (items per forward pass: None for the whole share of the step, ``auto`` to halve it
    after a CUDA out-of-memory error, in a one-process run). ``steps`` is the run's planned total, for the
    schedule: an online method that cannot know it exactly gives an upper bound (the rate then ends above 0).
    ``model`` is the module holding ``params``, which the objective calls through its own forward: in an
    FSDP launch it is sharded over the processes for the length of each ``fit`` call (``rlhf_organic.fsdp``)
    and handed back whole, trained; every process must then call it equally often in every step.
    """

    def __init__(self, params, settings, steps: int, *, model: torch.nn.Module | None = None):
        self.params, self.settings, self.model = list(params), settings, model
        self.schedule = Schedule(settings.lr, steps, settings.warmup_ratio)
        self.optimizer: torch.optim.Optimizer | None = None
        self.carried: dict | None = None  # optimizer state between sharded calls, as whole tensors (FSDP)
        micro = getattr(settings, "micro_batch_size", None)
        self.micro = None if micro in (None, "auto") else int(micro)
        self.auto_micro = micro == "auto"

    def fit(self, plan: list[np.ndarray], objective: Objective, progress: Callable | None = None,
            stop: Callable[[int, list[dict]], bool] | None = None) -> list[dict]:
        """Minimise ``objective`` over ``plan``; returns this plan's loss history.

        ``progress(n_items, loss)`` is called after every step; ``stop(steps_done, history)``, when given,
        ends the plan early when it returns true (PPO's KL early stop). In a multi-process run each process
        computes its share of every step (module docstring); the history's values are those of the whole step."""
        from . import distributed

        world = distributed.setup()
        if world > 1:
            distributed.broadcast_params(self.params)
        sharded = None
        if distributed.fsdp():
            if self.model is None:
                raise ValueError("an FSDP launch shards the model being trained: pass it to Trainer(model=...)")
            from . import fsdp

            sharded = fsdp.shard(self.model, self.params, distributed.fsdp_settings())
        try:
            history = _Run(self, sharded.params if sharded is not None else self.params, world, sharded,
                           distributed).run(plan, objective, progress, stop)
        except BaseException:
            if sharded is not None:
                sharded.close()  # no collective here: the other processes may not be failing with this one
            raise
        if sharded is not None:
            sharded.unshard()
        if world > 1:
            distributed.check_in_sync(self.params)
        return history

    def optimizer_for(self, params, sharded) -> torch.optim.Optimizer:
        """The run's AdamW over ``params``: the same one every call, or under FSDP (new shards each call) a
        new one holding the state the last call left."""
        s = self.settings
        if sharded is None:
            if self.optimizer is None:
                self.optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
            return self.optimizer
        optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
        if self.carried is not None:
            state = {i: {k: sharded.place(v, params[i]) if v.dim() else v for k, v in entry.items()}
                     for i, entry in self.carried["state"].items()}
            optimizer.load_state_dict({"state": state, "param_groups": self.carried["param_groups"]})
        return optimizer

    def carry(self, optimizer, sharded) -> None:
        """Keep a sharded call's optimizer state, gathered whole, for the next call (a collective)."""
        if sharded is None:
            return
        state = optimizer.state_dict()
        self.carried = {"param_groups": state["param_groups"],
                        "state": {i: {k: sharded.full(torch.as_tensor(v)) for k, v in entry.items()}
                                  for i, entry in state["state"].items()}}


class _Run:
    """One ``Trainer.fit`` call: the plan's steps, checkpoints and the non-finite guard."""

    def __init__(self, trainer: Trainer, params, world: int, sharded, distributed):
        self.trainer, self.params, self.world, self.sharded, self.distributed = trainer, params, world, sharded, distributed
        self.optimizer = trainer.optimizer_for(params, sharded)

    def run(self, plan, objective, progress, stop) -> list[dict]:
        trainer, optimizer, schedule, sharded = self.trainer, self.optimizer, self.trainer.schedule, self.sharded
        settings = trainer.settings
        history = []
        start = 0
        gather = sharded.full if sharded is not None else None
        saver = checkpoint.next_fit()  # None unless the pipeline checkpoints this stage
        if saver is not None and (restored := saver.restore(self.params, optimizer, schedule,
                                                            place=sharded.place if sharded is not None else None)) is not None:
            start, history = restored
            saver.resumed(start, len(plan))
            for row in history:  # a tracker run started by this attempt gets the whole curve
                if not row.get("skipped"):
                    tracking.log_training_step(row["loss"], {k: v for k, v in row.items() if k not in ("step", "loss")})
            if progress is not None:  # the bar starts where the checkpoint left off
                progress(sum(len(s) for s in plan[:start]), history[-1]["loss"] if history else math.nan)
        on_nonfinite = getattr(settings, "on_nonfinite", "stop")
        for number, step in enumerate(plan):
            if number < start:
                continue
            value, parts = self.step(step, objective)
            if sharded is not None:
                grad_norm = sharded.grad_norm(settings.grad_clip)
            else:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, settings.grad_clip))
            if not (math.isfinite(value) and math.isfinite(grad_norm)):
                # the same decision in every process: the loss and the summed gradients are the same everywhere
                what = f"loss {value}" if not math.isfinite(value) else f"gradient norm {grad_norm}"
                if on_nonfinite == "stop":
                    raise NonFiniteError(
                        f"non-finite {what} at step {number + 1} of {len(plan)} (batch of {len(step)} items: "
                        f"{_items(step)}); nothing was saved. Lower the learning rate, look at those items, or set "
                        "train.on_nonfinite: skip to drop such batches")
                optimizer.zero_grad(set_to_none=True)  # the batch is dropped: no update, parameters untouched
                schedule.step()
                history.append({"step": number + 1, "loss": math.nan, "skipped": what})
                continue
            schedule.apply(optimizer)
            optimizer.step()
            schedule.step()
            history.append({"step": number + 1, "loss": value, **parts})
            tracking.log_training_step(value, parts)
            if progress is not None:
                progress(len(step), history[-1]["loss"])
            if stop is not None and stop(number + 1, history):
                break  # saved below as done: a resumed run does not take the steps left out
            if saver is not None and number + 1 < len(plan):
                due = saver.due(number + 1)
                if sharded is not None:  # saving gathers the shards, a collective: the main process's clock decides for all
                    due = bool(self.distributed.gather(due)[0])
                if due:
                    saver.save(number + 1, self.params, optimizer, schedule, history, gather=gather)
        if saver is not None and start < len(plan):
            saver.save(len(plan), self.params, optimizer, schedule, history, done=True, gather=gather)
        trainer.carry(optimizer, sharded)
        return history

    def step(self, step: np.ndarray, objective: Objective) -> tuple[float, dict]:
        """Gradients of one step in ``.grad`` (summed over micro-batches and processes); returns the step's
        loss and parts. A CUDA out-of-memory error with ``micro_batch_size: auto`` halves the micro-batch
        and runs the step again."""
        while True:
            try:
                return self._step(step, objective)
            except torch.cuda.OutOfMemoryError:
                trainer = self.trainer
                size = trainer.micro or len(step)
                if not trainer.auto_micro or self.world > 1 or size <= 1:
                    raise
                self.optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                trainer.micro = size // 2
                print(f"out of GPU memory with {size} items per forward pass: going on with {trainer.micro} "
                     "(train.micro_batch_size: auto)", file=sys.stderr)

    def _step(self, step: np.ndarray, objective: Objective) -> tuple[float, dict]:
        world, sharded, distributed = self.world, self.sharded, self.distributed
        mine = step[distributed.rank()::world] if world > 1 else step
        micros = micro_batches(mine, self.trainer.micro)
        # FSDP gathers and reduces inside forward and backward: every process runs as many passes as the
        # process with the largest share; the extra ones are zero-weight passes over one item
        passes = len(micro_batches(step[: math.ceil(len(step) / world)], self.trainer.micro)) if sharded is not None else len(micros)
        with torch.no_grad():
            totals: dict = {}
            for micro in micros:
                _add(totals, objective.totals(micro))
            for _ in range(passes - len(micros)):
                objective.totals(step[:1])
        if world > 1:
            totals = _sum_dicts(distributed.gather(totals))
        self.optimizer.zero_grad(set_to_none=True)
        value, parts = 0.0, {}
        for micro in micros:
            loss, micro_parts = objective.loss(micro, totals)
            loss.backward()
            value += float(loss.detach())
            _add(parts, micro_parts)
        for _ in range(passes - len(micros)):
            loss, _ = objective.loss(step[:1], totals)
            (loss * 0.0).backward()
        if world > 1:
            if sharded is None:
                distributed.all_reduce_grads(self.params)
            shares = distributed.gather((value, parts))
            value, parts = sum(v for v, _ in shares), _sum_dicts([p for _, p in shares])
        return value, parts


def _add(into: dict, values: dict) -> None:
    for key, value in values.items():
        into[key] = into.get(key, 0.0) + value


def _sum_dicts(dicts: list[dict]) -> dict:
    out: dict = {}
    for d in dicts:
        _add(out, d)
    return out


def _items(step: np.ndarray, shown: int = 10) -> str:
    listed = ", ".join(str(int(i)) for i in step[:shown])
    return listed + (f", ... ({len(step) - shown} more)" if len(step) > shown else "")
