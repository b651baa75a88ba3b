"""Training and scoring loops for the reward model (plain torch, no Trainer).

A step takes ``batch_size`` items, thumbs and A/B choices mixed, and runs every text of the step in
one padded forward pass: thumbs contribute one sequence, a choice two (chosen, rejected). The loss is

    pointwise * BCE(thumbs) + pairwise * Bradley-Terry(choices) + reasons * BCE(dislike reasons)

each a weighted mean over the step's items of that kind (divided by their weight sum over the whole step,
however it is split into micro-batches), so trust weights of 1 give the unweighted losses and an item of
weight 0 gives no gradient.

Steps and the optimiser loop are ``rlhf_organic.training``'s, shared with the policy methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..losses import bradley_terry, pointwise_bce, reason_bce
from ..sequences import pad_right
from ..training import Objective, epoch_steps, fit, step_plan
from .spec import LossMix, TrainSettings


@dataclass
class Items:
    """Tokenised training items: thumbs (one sequence each) and A/B choices (two)."""

    point_ids: list[list[int]] = field(default_factory=list)
    point_label: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    point_weight: np.ndarray = field(default_factory=lambda: np.zeros(0))
    point_reasons: np.ndarray | None = None  # [n, n_reasons] one-hot, or None
    point_has_reason: np.ndarray | None = None
    chosen_ids: list[list[int]] = field(default_factory=list)
    rejected_ids: list[list[int]] = field(default_factory=list)
    pair_weight: np.ndarray = field(default_factory=lambda: np.zeros(0))
    point_flip: np.ndarray | None = None  # each label's flip rate (loss.flip_rates), or None
    pair_flip: np.ndarray | None = None

    @property
    def n_point(self) -> int:
        return len(self.point_ids)

    def __len__(self) -> int:
        return self.n_point + len(self.chosen_ids)

    def length(self, i: int) -> int:
        """Tokens item ``i`` puts in a batch (items >= n_point are pairs)."""
        if i < self.n_point:
            return len(self.point_ids[i])
        j = i - self.n_point
        return max(len(self.chosen_ids[j]), len(self.rejected_ids[j]))


def batch_order(items: Items, batch_size: int, group_by_length: bool, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of steps: arrays of item indices covering every item once."""
    return epoch_steps(np.array([items.length(i) for i in range(len(items))]), batch_size, group_by_length, rng)


def objective(model, items: Items, mix: LossMix, pad_id: int) -> Objective:
    """The mixed loss as an ``Objective``: each term's weighted sum over a micro-batch, divided by the
    weight sum of the term's items in the whole step."""
    device = model.head.weight.device

    def split(step):
        return step[step < items.n_point], step[step >= items.n_point] - items.n_point

    def flip(rates, rows):
        return None if rates is None else torch.as_tensor(rates[rows], dtype=torch.float32, device=device)

    def totals(step) -> dict:
        point, pair = split(step)
        out = {}
        if mix.pointwise > 0:
            out["point_weight"] = float(items.point_weight[point].sum())
            if items.point_reasons is not None and mix.reasons > 0:
                out["reason_weight"] = float((items.point_weight[point] * items.point_has_reason[point]).sum())
        if mix.pairwise > 0:
            out["pair_weight"] = float(items.pair_weight[pair].sum())
        return out

    def loss(step, total: dict) -> tuple[torch.Tensor, dict]:
        point, pair = split(step)
        sequences = [items.point_ids[i] for i in point] + [items.chosen_ids[j] for j in pair] + [items.rejected_ids[j] for j in pair]
        ids, mask = pad_right(sequences, pad_id, device)
        scores, reason_logits = model(ids, mask)
        value = scores.sum() * 0.0
        parts = {}
        if len(point) and mix.pointwise > 0:
            w = torch.as_tensor(items.point_weight[point], dtype=scores.dtype, device=device)
            label = torch.as_tensor(items.point_label[point], device=device)
            parts["pointwise"] = pointwise_bce(scores[: len(point)], label, w, total["point_weight"], flip(items.point_flip, point))
            value = value + mix.pointwise * parts["pointwise"]
            if "reason_weight" in total:
                rw = w * torch.as_tensor(items.point_has_reason[point], dtype=scores.dtype, device=device)
                target = torch.as_tensor(items.point_reasons[point], device=device)
                parts["reasons"] = reason_bce(reason_logits[: len(point)], target, rw, total["reason_weight"])
                value = value + mix.reasons * parts["reasons"]
        if len(pair) and mix.pairwise > 0:
            n = len(point)
            w = torch.as_tensor(items.pair_weight[pair], dtype=scores.dtype, device=device)
            parts["pairwise"] = bradley_terry(scores[n: n + len(pair)], scores[n + len(pair):], w, mix.margin, total["pair_weight"],
                                              flip(items.pair_flip, pair))
            value = value + mix.pairwise * parts["pairwise"]
        return value, {k: float(v.detach()) for k, v in parts.items()}

    return Objective(totals, loss)


def step_loss(model, items: Items, step: np.ndarray, mix: LossMix, pad_id: int) -> tuple[torch.Tensor, dict]:
    """The mixed loss of one whole step, and its parts (floats) for logging."""
    target = objective(model, items, mix, pad_id)
    with torch.no_grad():
        totals = target.totals(step)
    return target.loss(step, totals)


def train(model, items: Items, settings: TrainSettings, mix: LossMix, pad_id: int, seed: int = 0, progress=None) -> dict:
    """Train ``model``'s trainable parameters on ``items``; returns the loss history and step count."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    lengths = [items.length(i) for i in range(len(items))]
    plan = step_plan(lengths, settings.batch_size, settings.epochs, settings.group_by_length, rng)
    if settings.gradient_checkpointing:  # non-reentrant: works with frozen inputs (LoRA), no input-grad hook
        model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    history = fit(model.trainable_parameters(), plan, objective(model, items, mix, pad_id), settings,
                  None if progress is None else lambda n, loss: progress(n, loss=loss), model=model)
    model.eval()
    return {"steps": len(plan), "history": history}


@torch.no_grad()
def score(model, sequences: list[list[int]], pad_id: int, batch_size: int = 64, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """(scores [n], reason logits [n, n_reasons]) of token sequences, in batches of similar length."""
    model.eval()
    device = model.head.weight.device
    scores = np.zeros(len(sequences), np.float32)
    reasons = np.zeros((len(sequences), model.n_reasons), np.float32)
    order = np.argsort([len(s) for s in sequences], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start: start + batch_size]
        ids, mask = pad_right([sequences[i] for i in rows], pad_id, device)
        s, r = model(ids, mask)
        scores[rows] = s.float().cpu().numpy()
        reasons[rows] = r.float().cpu().numpy()
        if progress is not None:
            progress(len(rows))
    return scores, reasons
