"""Reward-model specs: one YAML file per reward model in ``reward_models/``, validated here.

A recipe (or ``rlhf-organic reward train --spec``) names a spec by name (``reward_models/NAME.yaml``,
looked up in the working directory first, then beside the installed package) or by path, and may
override any field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from ..errors import RecipeError
from ..models.loading import ATTENTION_HELP, Attention, DType, HubKernels, Quantization
from ..section import MICRO_BATCH_HELP, PRECISION_HELP, MicroBatchSize, Precision, Section
from ..settings import apply_overrides, key_lines, parse_overrides, set_by, typed_overrides, validation_problems

SPEC_DIRS = (Path("reward_models"), Path(__file__).resolve().parents[2] / "reward_models")


class TinyBase(Section):
    """``tiny``: the model built from a config when ``base: tiny`` (tokenizer trained on the data)."""

    kind: Literal["decoder", "encoder"] = "decoder"
    hidden: int = Field(64, ge=8, le=1024)
    layers: int = Field(2, ge=1, le=12)
    heads: int = Field(4, ge=1, le=16)
    vocab_size: int = Field(2000, ge=300, le=50_000, description="BPE vocabulary trained on the training texts")


class HeadSettings(Section):
    pooling: Literal["auto", "last", "mean", "first"] = Field(
        "auto", description="auto: the last token for decoders, the mean of all tokens for encoders"
    )
    reasons: bool = Field(False, description="add one logit per dislike reason (multi-label head)")


class LossMix(Section):
    """Total loss = pointwise * BCE(thumbs) + pairwise * Bradley-Terry(preferences) + reasons * BCE(reasons)."""

    pointwise: float = Field(1.0, ge=0)
    pairwise: float = Field(1.0, ge=0)
    reasons: float = Field(0.5, ge=0, description="used when head.reasons is true")
    margin: float = Field(0.0, description="Bradley-Terry margin: -logsigmoid(r_chosen - r_rejected - margin)")
    flip_rates: bool = Field(False, description=(
        "correct each thumbs and A/B choice for its user's label-flip rate, estimated by the trust stage "
        "(flip_rate in the trust folder): the unbiased pointwise and Bradley-Terry losses; needs trust weights "
        "from a scheme that consults the reference"))


class LoraSettings(Section):
    r: int = Field(8, ge=1, le=512)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: str | list[str] = Field("all-linear", description="PEFT target_modules")
    modules_to_save: list[str] = Field(
        [], description="modules trained in full besides the adapter (e.g. embed_tokens for a tiny random base)"
    )


class TrainSettings(Section):
    epochs: float = Field(1.0, gt=0, description="passes over the training data (fractions allowed)")
    batch_size: int = Field(16, ge=1, description="examples per step (a pair counts once)")
    micro_batch_size: MicroBatchSize = Field(None, description=MICRO_BATCH_HELP)
    precision: Precision = Field("auto", description=PRECISION_HELP)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    group_by_length: bool = Field(True, description="batch examples of similar length: less padding, same data")
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory, about a third slower"
    )
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="conversations (and A/B choices) held out for evaluation")
    eval_clean_max: int = Field(2000, ge=0, description="at most this many held-out replies scored against clean labels")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="a NaN / infinite loss or gradient: stop with a message naming the step and batch, or skip the batch")


class RewardSpec(Section):
    """One reward model: base, head, signals, loss mix, LoRA, training."""

    name: str = Field("reward", pattern=r"^[A-Za-z0-9_.-]+$")
    base: str = Field("tiny", description="'tiny', a hub id, a local model folder or a .gguf file")
    tiny: TinyBase = TinyBase()
    dtype: DType = "float32"
    quantization: Quantization = Field("none", description="4bit / 8bit need a CUDA GPU")
    hub_kernels: HubKernels = Field("auto", description="hub kernels (optimised layers fetched from the model hub): auto uses them "
        "on a CUDA GPU when the hub is reachable and never fails offline; on / off force them")
    attention: Attention = Field("auto", description=ATTENTION_HELP)
    trust_remote_code: bool = Field(
        False, description="let the base run code that ships with it (its config's auto_map); off unless you have "
        "read that code")
    signals: list[Literal["thumbs", "preferences"]] = Field(["thumbs", "preferences"], min_length=1)
    head: HeadSettings = HeadSettings()
    loss: LossMix = LossMix()
    lora: LoraSettings = LoraSettings()
    max_length: int = Field(256, ge=8, description="tokens per example; the context is cut from the left")
    train: TrainSettings = TrainSettings()

    @model_validator(mode="after")
    def _used_signals_weighted(self) -> RewardSpec:
        if "thumbs" in self.signals and self.loss.pointwise == 0 and "preferences" not in self.signals:
            raise ValueError("signals is [thumbs] but loss.pointwise is 0: nothing to learn from")
        if "preferences" in self.signals and self.loss.pairwise == 0 and "thumbs" not in self.signals:
            raise ValueError("signals is [preferences] but loss.pairwise is 0: nothing to learn from")
        return self


def find_spec(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        if not path.is_file():
            raise RecipeError(f"reward-model spec not found: {path}")
        return path
    for folder in SPEC_DIRS:
        if (folder / f"{name_or_path}.yaml").is_file():
            return folder / f"{name_or_path}.yaml"
    known = sorted({p.stem for d in SPEC_DIRS if d.is_dir() for p in d.glob("*.yaml")})
    raise RecipeError(f"no reward-model spec named {name_or_path!r}; known: {', '.join(known) or 'none'}")


def merge(base: dict, override: dict) -> dict:
    """``base`` with ``override`` applied, section by section."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_spec(path: Path) -> tuple[dict, str]:
    """(the spec file's settings, its text)."""
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a reward-model spec is a mapping, got {type(data).__name__}")
    return data, text


def load_spec(name_or_path: str, override: dict[str, Any] | None = None, sets: list[str] = ()) -> RewardSpec:
    """A validated spec: the file, then ``override`` (a recipe's), then ``key=value`` strings (the CLI's)."""
    path = find_spec(name_or_path)
    data, text = read_spec(path)
    parsed = parse_overrides(list(sets))
    data = apply_overrides(merge(data, override or {}), parsed)
    try:
        return RewardSpec.model_validate(data)
    except ValidationError as exc:
        items = {p: "reward.override" for p in _flat_keys(override or {})} | typed_overrides(list(sets), parsed)
        problems = validation_problems(exc, RewardSpec, _spec_locator(path, text, items, _name_items))
        raise RecipeError(f"{path}: invalid settings\n" + "\n".join(problems)) from None


def spec_problems(name_or_path: str, override: dict[str, Any], locate_override) -> list[str]:
    """Every problem of the spec with a recipe's ``override`` applied, one line each (none: valid).

    A problem in a key of ``override`` is located by ``locate_override(loc)`` (-> where, key path), the
    others in the spec file. Raises RecipeError when there is no such spec or it is not a YAML mapping."""
    path = find_spec(name_or_path)
    data, text = read_spec(path)
    try:
        RewardSpec.model_validate(merge(data, override))
    except ValidationError as exc:
        items = {p: "" for p in _flat_keys(override)}
        return validation_problems(exc, RewardSpec, _spec_locator(path, text, items, lambda loc, item: locate_override(loc)))
    return []


def _name_items(loc: tuple, item: str) -> tuple[str, str]:
    where = item if item == "reward.override" else f"command line: {item}"
    return where, ".".join(str(p) for p in loc) or "(top level)"


def _spec_locator(path: Path, text: str, items: dict[tuple, str], locate_item):
    """``locate`` for a spec file with ``items`` (key path -> text) applied on top: a problem an item set
    or created goes to ``locate_item(loc, text)``, a problem of the whole spec to the item (when there is
    one: it changed the spec), the rest to the spec file and line."""
    lines = key_lines(text)

    def locate(loc: tuple) -> tuple[str, str]:
        item = set_by(loc, items, lines)
        if item is None and not loc and items:
            item = next(iter(items.values()))
        if item is not None:
            return locate_item(loc, item)
        return (f"{path}:{lines[loc]}" if loc in lines else str(path)), ".".join(str(p) for p in loc) or "(top level)"

    return locate


def _flat_keys(tree: dict, prefix: tuple = ()) -> list[tuple]:
    keys = []
    for key, value in tree.items():
        keys.append(prefix + (key,))
        if isinstance(value, dict):
            keys += _flat_keys(value, prefix + (key,))
    return keys


def dump_spec(spec: RewardSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
