"""RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024, "Back to Basics"), trust-weighted,
on one shared base.

Per round (``groups.train_rounds``): contexts drawn by trust, ``k`` replies each from the policy, scored by
the reward model. A reply's reward is its score (less the length penalty) less ``kl_coef`` x its summed
log pi - log pi_ref over its tokens, the KL folded into the reward as in the paper; its advantage is that
reward less the mean reward of the other ``k - 1`` replies to the same context (``losses.rloo_advantages``),
shared by all its tokens. The update is the clipped token-level objective (``losses.clipped_token_loss``)
without a KL term of its own. No value head: the group is the baseline, so one policy model is trained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from ...contracts import MethodContract
from .groups import Groups, GroupUpdate, penalised, train_rounds

if TYPE_CHECKING:
    import torch

    from ..train import MethodRun

DESCRIPTION = "RLOO: k replies per context from the policy, reward-model scores less KL, leave-one-out baseline"


class Config(GroupUpdate):
    kl_coef: float = Field(0.05, ge=0, description="reward taken off per nat of log pi - log pi_ref summed over a reply")


def train(run: MethodRun) -> dict:
    from ...losses import rloo_advantages

    kl_coef = run.config.kl_coef

    def advantages(groups: Groups, kl: torch.Tensor | None):
        reward = penalised(groups, run.config)
        if kl is not None:
            reward = reward - kl_coef * kl
        return reward, rloo_advantages(reward)

    return train_rounds(run, "rloo", advantages, kl_in_loss=False)


CONTRACT = MethodContract(
    name="rloo", description=DESCRIPTION, settings=Config, train=train, needs_reward_model=True, generates=True, online=True,
    fsdp="it samples replies every round, and sampling from FSDP-sharded parameters is not built yet",
    returns=("items", "rounds", "weight_sum"),
)
