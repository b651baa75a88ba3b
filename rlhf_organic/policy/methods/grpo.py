"""GRPO: group-relative policy optimisation (Shao et al. 2024, DeepSeekMath), trust-weighted, on one
shared base.

Per round (``groups.train_rounds``): contexts drawn by trust, ``k`` replies each from the policy, scored by
the reward model (less the length penalty). A reply's advantage is its reward less its group's mean,
divided by the group's standard deviation (``scale_rewards: group``, the paper's), the batch's (``batch``)
or nothing (``none``, Dr. GRPO) (``losses.grpo_advantages``). The update is the clipped token-level
objective plus ``kl_coef`` x the k3 estimate of KL to the reference in the loss, not in the reward
(``losses.clipped_token_loss``). No value head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ...contracts import MethodContract
from .groups import Groups, GroupUpdate, penalised, train_rounds

if TYPE_CHECKING:
    import torch

    from ..train import MethodRun

DESCRIPTION = "GRPO: k replies per context from the policy, group-normalised reward-model scores, KL in the loss"


class Config(GroupUpdate):
    kl_coef: float = Field(0.04, ge=0, description="weight of the k3 KL to the reference in the loss (0: no reference pass)")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="divide the centred rewards by the group's std, the batch's, or nothing (Dr. GRPO)")


def train(run: MethodRun) -> dict:
    from ...losses import grpo_advantages

    scale = run.config.scale_rewards

    def advantages(groups: Groups, kl: torch.Tensor | None):
        reward = penalised(groups, run.config)
        return reward, grpo_advantages(reward, scale)

    return train_rounds(run, "grpo", advantages, kl_in_loss=True)


CONTRACT = MethodContract(
    name="grpo", description=DESCRIPTION, settings=Config, train=train, needs_reward_model=True, generates=True, online=True,
    fsdp="it samples replies every round, and sampling from FSDP-sharded parameters is not built yet",
    returns=("items", "rounds", "weight_sum"),
)
