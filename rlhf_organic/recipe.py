"""Recipes: one YAML file, one section per stage, validated completely before any heavy work.

Unknown keys are errors that list the valid keys and suggest the nearest; wrong types and
out-of-range values name the key path and the line of the recipe file. ``key=value`` overrides
from the command line are applied to the parsed YAML and validated the same way (the helpers for
both, shared with the sections and stage configs, are in ``settings.py``).

Sections so far: ``data`` (simulate or read logs, then ingest), ``trust`` (defined in
``trust/config.py``), ``reward`` (``reward/config.py``; optional) and ``output``. Later stages (reward,
policy, eval) add their own section class and one field on ``Recipe``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, create_model, model_validator

from .contracts import set_fields
from .data import INPUT_FORMATS
from .data.privacy import PrivacySection
from .errors import RecipeError
from .policy.config import PolicySection
from .policy.methods import METHODS
from .reward.config import SPEC_CHECKED_BY_CALLER, RewardSection
from .reward.spec import spec_problems
from .section import ENGINE_HELP, RAY_ADDRESS_HELP, Engine, Section
from .settings import apply_overrides, key_lines, locator, parse_overrides, typed_overrides, validation_problems
from .simulator.simulate import PRESETS, SimConfig, preset_config
from .trust.config import TrustSection
from .trust.schemes import SCHEMES


def _optional_copy(name: str, field) -> tuple:
    """SimConfig's field as optional (None = the preset's value), keeping its range checks."""
    inner = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    return (inner | None, Field(None, description=field.description))


_SimulateBase = create_model(
    "_SimulateBase",
    __base__=Section,
    **{name: _optional_copy(name, f) for name, f in SimConfig.model_fields.items()},
)


class SimulateSection(_SimulateBase):
    """``data.simulate``: a simulator preset plus any of its settings to override."""

    preset: Literal[tuple(PRESETS)] = "tiny"  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _whole_config_valid(self) -> SimulateSection:
        self.config()  # cross-field checks (mix sums to 1, ...) with the preset applied
        return self

    def config(self, default_seed: int = 0) -> SimConfig:
        overrides = self.model_dump(exclude={"preset"}, exclude_none=True)
        overrides.setdefault("seed", default_seed)
        return preset_config(self.preset, **overrides)


class DataSection(Section):
    """``data``: where the organic logs come from and how to ingest them."""

    source: Literal["simulate", "files"] = "simulate"
    simulate: SimulateSection = SimulateSection()
    inputs: list[str] = Field(default_factory=list, description="log files, folders or globs (source: files)")
    format: Literal[INPUT_FORMATS] = "auto"  # type: ignore[valid-type]
    strict: bool = Field(False, description="stop at the first bad record instead of quarantining it")
    chunk_mb: int = Field(32, ge=1, le=4096, description="ingest reads this many MB at a time")
    max_context: int = Field(256, ge=1, description="most recent earlier messages kept in an example's context")
    privacy: PrivacySection = Field(default_factory=PrivacySection, description="ids to hash and fields to drop at "
                                    "ingest (docs/safety.md)")
    engine: Engine = Field("local", description="where ingest runs; " + ENGINE_HELP)
    ray_address: str | None = Field(None, description=RAY_ADDRESS_HELP)

    @model_validator(mode="after")
    def _inputs_for_files(self) -> DataSection:
        if self.source == "files" and not self.inputs:
            raise ValueError("source is 'files' but inputs is empty: list log files, folders or globs")
        return self


TRACKERS = ("tensorboard", "wandb", "trackio")


class OutputSection(Section):
    dir: str = Field("runs/{name}", description="run folder; {name} is the recipe name")
    overwrite: bool = Field(False, description="replace an existing run folder")
    report_to: Literal["auto", "none"] | list[Literal[TRACKERS]] = Field(  # type: ignore[valid-type]
        "auto", description="experiment trackers: auto (tensorboard when installed), none, or a list of "
        "tensorboard, wandb, trackio",
    )
    samples_in_report: int = Field(8, ge=0, description="base vs tuned replies shown in report.md / report.html")
    show_user_text: bool | None = Field(
        None, description="print user message text in reports and policy/samples.md; default (null): only for "
        "simulated data (data.source: simulate)")
    checkpoint_steps: int = Field(200, ge=1, description="training checkpoint every this many steps (for --resume)")
    checkpoint_minutes: float = Field(10.0, gt=0, description="... or after this many minutes, whichever comes first")


class AblateSection(Section):
    """``ablate``: the grid ``rlhf-organic ablate`` runs (``run`` ignores it)."""

    grid: dict[str, list] = Field(default_factory=dict, description="recipe key -> values, e.g. {trust.scheme: [uniform, combined]}")
    seeds: int = Field(1, ge=1, le=100, description="runs per cell, with seeds seed, seed+1, ...")

    @model_validator(mode="after")
    def _values_listed(self) -> AblateSection:
        for key, values in self.grid.items():
            if not values:
                raise ValueError(f"grid key {key!r} has no values")
        return self


class Recipe(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="run name (letters, digits, _ . -)")
    seed: int = Field(0, description="default seed of every stage")
    data: DataSection = DataSection()
    trust: TrustSection = TrustSection()
    reward: RewardSection | None = None
    policy: PolicySection | None = None
    output: OutputSection = OutputSection()
    ablate: AblateSection | None = None

    @model_validator(mode="after")
    def _reward_model_for_the_method(self) -> Recipe:
        """A method whose contract needs a reward model (with these settings) needs a ``reward`` section."""
        if self.policy is not None and self.reward is None:
            contract = METHODS[self.policy.method]
            if contract.requires_reward(self.policy.method_config()):
                when = f" for {contract.reward_model_when}" if callable(contract.needs_reward_model) else ""
                raise ValueError(f"policy method {self.policy.method} needs a reward model{when}: add a reward section "
                                 "(e.g. reward: {spec: tiny})")
        return self

    def output_dir(self) -> Path:
        return Path(self.output.dir.format(name=self.name))


def _rebuild_recipe() -> None:
    """After a method is registered at run time (its section was rebuilt before): the recipe's validator
    and schema take the change."""
    Recipe.model_rebuild(force=True)


def _rebuild_recipe_trust() -> None:
    """After a scheme is registered at run time: the same, and a default ``trust`` section that has the
    current schemes' sub-sections."""
    set_fields(Recipe, {"trust": (TrustSection, TrustSection())})


# after policy.config's and trust.config's own listeners, which were subscribed when they were imported
METHODS.subscribe(_rebuild_recipe)
SCHEMES.subscribe(_rebuild_recipe_trust)


def recipe_schema() -> dict:
    """The recipe's JSON schema (every section, every registered method and scheme), as ``rlhf-organic schema``
    prints it for editors."""
    return Recipe.model_json_schema()


# ---- loading ----------------------------------------------------------------------------------


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read, override and validate a recipe; raises RecipeError with every problem found."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RecipeError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections, got {type(data).__name__}")
    parsed = parse_overrides(list(overrides))
    data = apply_overrides(data, parsed)
    locate = locator(str(path), key_lines(text), typed_overrides(list(overrides), parsed))
    problems = []
    try:  # the reward spec is checked below, so that its problems are located here and listed with the rest
        recipe = Recipe.model_validate(data, context={SPEC_CHECKED_BY_CALLER: True})
    except ValidationError as exc:
        problems += validation_problems(exc, Recipe, locate)
    problems += _reward_spec_problems(data.get("reward"), locate)
    if problems:
        raise RecipeError(f"{path}: invalid settings\n" + "\n".join(problems))
    return recipe


def _reward_spec_problems(section: Any, locate: Callable[[tuple], tuple[str, str]]) -> list[str]:
    """Problems of the reward spec a recipe's ``reward`` section names, with its ``override`` applied:
    those in ``override`` located in the recipe (or on the command line), the others in the spec file."""
    if not isinstance(section, dict):
        return []
    spec, override = section.get("spec", "tiny"), section.get("override", {})
    if not isinstance(spec, str) or not isinstance(override, dict):
        return []  # the section's own validation says what is wrong
    try:
        return spec_problems(spec, override, lambda loc: locate(("reward", "override", *loc)))
    except RecipeError as exc:  # no such spec, or a spec file that is not a YAML mapping
        where, key = locate(("reward", "spec"))
        return [f"  {where}: {key}: {exc}"]


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML: every default filled in, the simulator preset expanded."""
    data = recipe.model_dump(mode="json")
    sim = recipe.data.simulate
    data["data"]["simulate"] = {"preset": sim.preset, **sim.config(recipe.seed).model_dump(mode="json")}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
