"""The ``reward`` recipe section: which reward-model spec, overrides of its fields, trust or not."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, model_validator

from ..section import Section
from .spec import RewardSpec, load_spec

# Validation context key: ``load_recipe`` checks the spec itself, locating each problem in the recipe
# and listing it with the recipe's other problems (a validator can only raise the first one, unlocated).
SPEC_CHECKED_BY_CALLER = "reward_spec_checked_by_caller"


class RewardSection(Section):
    """``reward``: train a reward model after trust (omit the section to stop after trust)."""

    spec: str = Field("tiny", description="a spec name in reward_models/ or a YAML path")
    override: dict[str, Any] = Field(default_factory=dict, description="spec fields to change, e.g. {train: {epochs: 3}}")
    weighted: bool = Field(True, description="weight examples by the trust stage (false: uniform weights)")

    @model_validator(mode="after")
    def _spec_valid(self, info: ValidationInfo) -> RewardSection:
        if not (info.context or {}).get(SPEC_CHECKED_BY_CALLER):
            self.resolve()  # a bad spec name or override fails when the recipe loads, not after trust
        return self

    def resolve(self) -> RewardSpec:
        return load_spec(self.spec, self.override)
