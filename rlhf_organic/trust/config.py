"""The ``trust`` recipe section: which scheme, the shared reference model, and one sub-section per
scheme (so an ablation can switch schemes without losing anyone's settings), built from the registry of
scheme contracts and rebuilt when a scheme is registered at run time."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, create_model

from ..contracts import set_fields
from ..section import ENGINE_HELP, RAY_ADDRESS_HELP, Engine, Section
from ..settings import apply_overrides, parse_overrides, typed_overrides, validate_settings
from .reference import ReferenceConfig
from .scheme import SchemeConfig
from .schemes import SCHEMES


def _choice() -> tuple[Any, Any]:
    """``scheme``: one of the registered schemes (its annotation and field)."""
    return Literal[tuple(SCHEMES)], Field("combined", description="trust scheme (see docs/trust.md)")


class _TrustSettings(Section):
    """``trust``: how much to believe each user."""

    scheme: Literal[tuple(SCHEMES)] = _choice()[1]  # type: ignore[valid-type]
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    select_on_gold: bool = Field(
        True,
        description="choose the scheme's threshold on examples with clean crowdworker labels, when there are "
        "enough (else keep the configured one)",
    )
    ground_truth: str | None = Field(
        None, description="ground_truth.parquet (user_id, is_troll) to evaluate against; simulated runs use theirs"
    )
    engine: Engine = Field("local", description="where the k-fold reference runs; " + ENGINE_HELP)
    ray_address: str | None = Field(None, description=RAY_ADDRESS_HELP)

    def scheme_config(self) -> SchemeConfig:
        return getattr(self, self.scheme)


def _scheme_sections() -> dict[str, tuple[Any, Any]]:
    """One sub-section per registered scheme, after the shared settings."""
    return {name: (contract.settings, Field(default_factory=contract.settings, description=contract.description))
            for name, contract in SCHEMES.items()}


TrustSection = create_model("TrustSection", __base__=_TrustSettings, **_scheme_sections())  # type: ignore[call-overload]
_BUILT = set(SCHEMES)


def _rebuild() -> None:
    """After a scheme is registered or removed: the same class, with the current schemes."""
    global _BUILT
    set_fields(TrustSection, {"scheme": _choice(), **_scheme_sections()}, drop=_BUILT - set(SCHEMES))
    _BUILT = set(SCHEMES)


SCHEMES.subscribe(_rebuild)


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
