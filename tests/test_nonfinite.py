"""NaN / inf guards in the shared training loop: stop with a message naming the step and the batch, or
skip the batch when the settings say so; nothing non-finite reaches the parameters or the outputs."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rlhf_organic.cli import main
from rlhf_organic.training import NonFiniteError, Objective, fit

PLAN = [np.array([0, 1]), np.array([2, 3]), np.array([4, 5, 6]), np.array([7])]


def _settings(on_nonfinite="stop"):
    return SimpleNamespace(lr=0.1, weight_decay=0.0, warmup_ratio=0.0, grad_clip=1.0, on_nonfinite=on_nonfinite)


def _problem(kind: str, bad_step: int):
    """A quadratic loss; at ``bad_step`` (1-based) a NaN loss or a finite loss with an infinite gradient."""
    p = torch.nn.Parameter(torch.ones(3))
    seen = []

    def step_loss(step):
        seen.append(p.detach().clone())
        if len(seen) == bad_step:
            if kind == "nan_loss":
                return (p * torch.tensor(math.nan)).sum(), {}
            return torch.sqrt(p - p.detach()).sum(), {}  # value 0, gradient +inf
        return ((p - 3.0) ** 2).sum() * len(step), {}

    return p, seen, Objective(totals=lambda items: {}, loss=lambda items, totals: step_loss(items))


@pytest.mark.parametrize("kind", ["nan_loss", "inf_gradient"])
def test_stop_names_the_step_and_batch_and_leaves_parameters_finite(kind):
    p, _, objective = _problem(kind, bad_step=3)
    with pytest.raises(NonFiniteError) as err:
        fit([p], PLAN, objective, _settings())
    message = str(err.value)
    assert "step 3 of 4" in message and "4, 5, 6" in message and "on_nonfinite: skip" in message
    assert ("loss nan" if kind == "nan_loss" else "gradient norm inf") in message
    assert torch.isfinite(p).all()


@pytest.mark.parametrize("kind", ["nan_loss", "inf_gradient"])
def test_skip_drops_the_batch_without_touching_the_parameters(kind):
    p, seen, objective = _problem(kind, bad_step=3)
    history = fit([p], PLAN, objective, _settings("skip"))
    assert [row.get("skipped") is not None for row in history] == [False, False, True, False]
    assert torch.equal(seen[3], seen[2])  # step 4 starts from the parameters step 3 started from
    assert torch.isfinite(p).all() and math.isnan(history[2]["loss"])


def test_a_diverging_reward_run_stops_clearly_and_writes_nothing(tmp_path):
    runner = CliRunner()
    assert runner.invoke(main, ["simulate", "--preset", "tiny", "--users", "20", "--out", str(tmp_path / "sim"), "-q"]).exit_code == 0
    assert runner.invoke(main, ["ingest", str(tmp_path / "sim" / "logs"), "--out", str(tmp_path / "ds"), "-q"]).exit_code == 0
    res = runner.invoke(main, ["reward", "train", str(tmp_path / "ds"), "--set", "train.lr=1e30", "--set", "train.epochs=0.5",
                               "--out", str(tmp_path / "rm"), "-q"])
    assert res.exit_code == 2 and "non-finite" in res.stderr and "step 2 of" in res.stderr
    assert not (tmp_path / "rm").exists() and not list(tmp_path.glob(".rm*"))  # no half-written or corrupted model
