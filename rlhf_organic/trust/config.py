"""The ``trust`` recipe section: which scheme, the shared reference model, and one sub-section per
scheme (so an ablation can switch schemes without losing anyone's settings)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, create_model

from ..section import Section
from ..settings import apply_overrides, parse_overrides, typed_overrides, validate_settings
from .reference import ReferenceConfig
from .scheme import SchemeConfig
from .schemes import SCHEMES


class _TrustSettings(Section):
    """``trust``: how much to believe each user."""

    scheme: Literal[tuple(SCHEMES)] = Field("combined", description="trust scheme (see docs/trust.md)")  # type: ignore[valid-type]
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    select_on_gold: bool = Field(
        True,
        description="choose the scheme's threshold on examples with clean crowdworker labels, when there are "
        "enough (else keep the configured one)",
    )
    ground_truth: str | None = Field(
        None, description="ground_truth.parquet (user_id, is_troll) to evaluate against; simulated runs use theirs"
    )

    def scheme_config(self) -> SchemeConfig:
        return getattr(self, self.scheme)


# One sub-section per registered scheme, after the shared settings.
TrustSection = create_model(
    "TrustSection",
    __base__=_TrustSettings,
    **{name: (module.Config, Field(default_factory=module.Config, description=module.DESCRIPTION))
       for name, module in SCHEMES.items()},
)


def settings_from_cli(scheme: str, sets: list[str]) -> TrustSection:
    """A TrustSection from ``--scheme`` and ``--set key=value`` items.

    Keys are paths in the trust section (``reference.folds=3``, ``per_user.threshold=0.4``); a key that
    is not one names a setting of the chosen scheme (``threshold=0.4``).
    """
    parsed = []
    for path, value in parse_overrides(sets):
        if path[0] not in TrustSection.model_fields and scheme in SCHEMES:
            path = (scheme, *path)
        parsed.append((path, value))
    data = apply_overrides({"scheme": scheme}, parsed)
    return validate_settings(TrustSection, data, "trust settings", overridden=typed_overrides(sets, parsed))
