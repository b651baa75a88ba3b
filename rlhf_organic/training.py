"""The optimisation loop shared by the reward model and the policy methods (plain torch, no Trainer).

``step_plan`` lays out the steps of a run: every item once per epoch, in shuffled steps; with
``group_by_length`` the items are sorted by length inside windows of 64 steps (far less padding) and
the steps shuffled again. ``fit`` runs AdamW with linear warm-up and decay and gradient clipping over
those steps, calling the method's ``step_loss``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

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
        progress: Callable | None = None) -> list[dict]:
    """Minimise ``step_loss(step) -> (loss, parts)`` over ``plan``; returns the loss history.

    ``settings`` has lr, weight_decay, warmup_ratio and grad_clip; ``progress(n_items, loss)`` is
    called after every step.
    """
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(1, int(settings.warmup_ratio * len(plan)))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (len(plan) - s) / max(1, len(plan) - warmup)))
    )
    history = []
    for number, step in enumerate(plan):
        loss, parts = step_loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        schedule.step()
        history.append({"step": number + 1, "loss": float(loss.detach()), **parts})
        if progress is not None:
            progress(len(step), history[-1]["loss"])
    return history
