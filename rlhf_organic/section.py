"""The base class of every recipe section and stage config: frozen, unknown keys rejected."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
