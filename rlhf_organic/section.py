"""The base class of every recipe section and stage config: frozen, unknown keys rejected, and no
infinite or NaN numbers (YAML writes them ``.inf`` / ``.nan``; no setting means them, and they pass
range checks such as ``gt=0``, to fail much later as an OverflowError or a NaN loss)."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
