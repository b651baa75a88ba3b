"""The optimisation loop shared by the reward model and the policy methods (plain torch, no Trainer).

``step_plan`` lays out the steps of a run: every item once per epoch, in shuffled steps; with
``group_by_length`` the items are sorted by length inside windows of 64 steps (far less padding) and
the steps shuffled again. ``fit`` runs AdamW with linear warm-up and decay and gradient clipping over
those steps, calling the method's ``step_loss``.

In a multi-process run (``rlhf_organic.distributed``: ``accelerate launch``, ``torchrun``) every process walks
the same plan and takes its share of each step, ``step[rank::world]``; its loss is scaled by its share of
the step's items and the gradients are summed across processes before clipping, so every process takes
the same optimizer step and keeps the same parameters. For a loss that is a plain mean over the step's
items this is the one-process gradient exactly (up to float rounding); for a weighted mean (trust
weights), or a loss mixing means over different kinds of items, each process's mean uses its own share's
denominator, so the step is close to, not equal to, the one-process step (``docs/distributed.md``).
Under an FSDP launch the model is sharded for the length of ``fit`` (``rlhf_organic.fsdp``): the same steps,
with the gradients summed by FSDP's reduce-scatter instead of the all-reduce.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from . import checkpoint, tracking
from .errors import UserError


class NonFiniteError(UserError):
    """A NaN or infinite loss or gradient stopped training (``train.on_nonfinite: stop``)."""

GROUP_WINDOW = 64  # steps per length-sorting window


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


def fit(params: list[torch.nn.Parameter], plan: list[np.ndarray], step_loss: Callable, settings,
        progress: Callable | None = None, *, model: torch.nn.Module | None = None) -> list[dict]:
    """Minimise ``step_loss(step) -> (loss, parts)`` over ``plan``; returns the loss history.

    ``settings`` has lr, weight_decay, warmup_ratio and grad_clip; ``progress(n_items, loss)`` is
    called after every step. In a multi-process run each process computes ``step_loss`` on its share
    of the step (module docstring); the history's values are those of the whole step. ``model`` is the
    module holding ``params``, which ``step_loss`` calls (through its own forward, not a submodule's): in
    an FSDP launch it is sharded over the processes for the length of this call (``rlhf_organic.fsdp``) and
    handed back whole, trained; every process must then call it equally often in every step.
    """
    from . import distributed

    params = list(params)
    world = distributed.setup()
    if world > 1:
        distributed.broadcast_params(params)
    sharded = None
    if distributed.fsdp():
        if model is None:
            raise ValueError("an FSDP launch shards the model being trained: pass it to fit(model=...)")
        from . import fsdp

        sharded = fsdp.shard(model, params, distributed.fsdp_settings())
    try:
        history = _run(sharded.params if sharded is not None else params, plan, step_loss, settings, progress, world,
                       sharded, distributed)
    except BaseException:
        if sharded is not None:
            sharded.close()  # no collective here: the other processes may not be failing with this one
        raise
    if sharded is not None:
        sharded.unshard()
    if world > 1:
        distributed.check_in_sync(params)
    return history


def _run(params, plan, step_loss, settings, progress, world, sharded, distributed) -> list[dict]:
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(1, int(settings.warmup_ratio * len(plan)))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (len(plan) - s) / max(1, len(plan) - warmup)))
    )
    history = []
    start = 0
    gather = sharded.full if sharded is not None else None
    saver = checkpoint.next_fit()  # None unless the pipeline checkpoints this stage
    if saver is not None and (restored := saver.restore(params, optimizer, schedule,
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
        if world > 1:
            value, parts = _shared_step(params, step, step_loss, optimizer, distributed, sharded is not None)
        else:
            loss, parts = step_loss(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            value = float(loss.detach())
        if sharded is not None:
            grad_norm = sharded.grad_norm(settings.grad_clip)
        else:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, settings.grad_clip))
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
        optimizer.step()
        schedule.step()
        history.append({"step": number + 1, "loss": value, **parts})
        tracking.log_training_step(value, parts)
        if progress is not None:
            progress(len(step), history[-1]["loss"])
        if saver is not None and number + 1 < len(plan):
            due = saver.due(number + 1)
            if sharded is not None:  # saving gathers the shards, a collective: the main process's clock decides for all
                due = bool(distributed.gather(due)[0])
            if due:
                saver.save(number + 1, params, optimizer, schedule, history, gather=gather)
    if saver is not None and start < len(plan):
        saver.save(len(plan), params, optimizer, schedule, history, done=True, gather=gather)
    return history


def _items(step: np.ndarray, shown: int = 10) -> str:
    listed = ", ".join(str(int(i)) for i in step[:shown])
    return listed + (f", ... ({len(step) - shown} more)" if len(step) > shown else "")


def _shared_step(params, step: np.ndarray, step_loss: Callable, optimizer, distributed, sharded: bool) -> tuple[float, dict]:
    """This process's share of ``step``: loss scaled by the share, backward, gradients summed over the
    processes (by FSDP's reduce-scatter when ``sharded``); returns the step's loss and parts, each the
    share-weighted sum of the processes' values."""
    world, rank = distributed.world(), distributed.rank()
    mine = step[rank::world]
    share = len(mine) / max(1, len(step))
    optimizer.zero_grad(set_to_none=True)
    value, parts = 0.0, {}
    if len(mine):  # an empty share (a step smaller than the world) still joins the reduction below, with no gradient
        loss, parts = step_loss(mine)
        (loss * share).backward()
        value = float(loss.detach())
    elif sharded:  # FSDP's gathers and reductions run inside forward and backward: join them with a zero-weight pass
        loss, _ = step_loss(step[:1])
        (loss * 0.0).backward()
    if not sharded:
        distributed.all_reduce_grads(params)
    shares = distributed.gather((share, value, parts))
    merged: dict = {}
    for key in dict.fromkeys(k for _, _, p in shares for k in p):  # a part only some shares have (no A/B choice in one)
        having = [(s, p[key]) for s, _, p in shares if key in p]
        values = [v for _, v in having]
        total = sum(s for s, _ in having)
        if all(v == values[0] for v in values) or total == 0 or not all(isinstance(v, (int, float)) for v in values):
            merged[key] = values[0]  # the same everywhere (a round number), or nothing to weigh by
        else:
            merged[key] = sum(s * v for s, v in having) / total
    return sum(s * v for s, v, _ in shares), merged
