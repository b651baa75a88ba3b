"""Saved model folders (a reward model or clean judge, a policy): what they hold, what their ``base`` may
name, and the checks that run before anything in them is loaded.

A saved folder is read only as the files this package writes there: a JSON metadata file, the LoRA
adapter and heads as safetensors, and, for a tiny base, the base model as safetensors in ``base/``. A
folder that is damaged (a file cut short or missing) or tampered with (a pickled ``.bin`` where
safetensors belong, a ``base`` that points elsewhere) is refused with a message naming the folder and
the file, before transformers, PEFT or torch reads it: never a traceback, never a pickle loaded.

What the metadata's ``base`` may name:

- the folder's own base (``tiny`` in ``reward_model.json``, ``base`` in ``policy.json``): ``base/``;
- a hub id (``name`` or ``owner/name``, the hub's characters): the local model cache, the Hugging Face
  cache or the hub (``loading.hub_access``: offline or unreachable, it fails once, at once);
- an absolute path to a model folder or a ``.gguf`` file (a base given as a local path is saved as
  an absolute one).

Anything else (a relative path, ``~``, ``..``, a URL, an empty or non-string value) is refused: a
relative path would mean wherever the command happens to run, and a URL is not a model.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .loading import BaseModelError, DType, Quantization

# The hub's repo ids: one or two names of letters, digits, '.', '_' and '-', without '--' or '..'.
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin", "model.pt", "model.pth")


class _Meta(BaseModel):
    # unknown keys ignored: a later version may record more; NaN / inf are never a valid size
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    format: Literal[1]
    base: Any  # checked by saved_base, which says what a base may be
    dtype: DType
    trust_remote_code: bool = False


class RewardMeta(_Meta):
    """``reward_model.json`` (written by ``reward.model.save_reward_model``)."""

    pooling: Literal["last", "mean", "first"]
    reasons: list[str]
    max_length: int = Field(ge=1)
    quantization: Quantization


class PolicyMeta(_Meta):
    """``policy.json`` (written by ``policy.stage.save_policy``)."""

    method: str
    quantization: Quantization = "none"  # older folders did not record it: trained unquantized
    max_prompt_length: int = Field(ge=1)
    max_completion_length: int = Field(ge=1)


def damaged(path: Path, what: str) -> BaseModelError:
    """The refusal of a file that is there but unusable; says how to get a good folder back."""
    return BaseModelError(f"{path}: {what}. The folder {path.parent} is damaged or incomplete (a copy cut short, "
                          "a file removed by hand?): copy it again, or train it again")


def read_meta(folder: Path, name: str, schema: type[_Meta], kind: str) -> dict:
    """The folder's metadata file, checked field by field against ``schema``."""
    path = folder / name
    if not path.is_file():
        raise BaseModelError(f"{folder} is not a {kind} folder (no {name})")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise damaged(path, f"not valid JSON ({exc})") from None
    except OSError as exc:
        raise damaged(path, f"cannot be read ({exc.strerror})") from None
    if not isinstance(meta, dict):
        raise damaged(path, f"should hold a JSON object, holds a {type(meta).__name__}")
    try:
        schema.model_validate(meta)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise damaged(path, f"not a valid {kind} description: {problems}") from None
    return meta


def require(path: Path, what: str) -> Path:
    """``path`` when it is a file; refused as missing otherwise."""
    if not path.is_file():
        raise damaged(path, f"missing ({what})")
    return path


def refuse_pickles(folder: Path) -> None:
    """Refuse a folder holding a pickled PyTorch checkpoint: this package saves only safetensors, so one
    there was put by someone else, and loading it could run code."""
    for name in PICKLED:
        if (folder / name).exists():
            raise BaseModelError(
                f"{folder / name} is a pickled PyTorch checkpoint. rlhf_organic writes saved model folders only as "
                "safetensors (numbers, never code) and does not load pickled files in them, since loading one can "
                "run code: use a folder as rlhf_organic wrote it")


def check_weights(folder: Path, what: str) -> None:
    """A base model folder of ours: config.json and safetensors weights, and no pickle."""
    if not folder.is_dir():
        raise damaged(folder, f"missing ({what})")
    refuse_pickles(folder)
    require(folder / "config.json", f"the configuration of {what}")
    if not any((folder / name).is_file() for name in WEIGHTS):
        raise damaged(folder / WEIGHTS[0], f"missing (the weights of {what})")


def check_adapter(folder: Path) -> None:
    """A PEFT adapter folder of ours: its config (valid JSON) and its safetensors weights, and no pickle."""
    if not folder.is_dir():
        raise damaged(folder, "missing (the LoRA adapter)")
    refuse_pickles(folder)
    config = require(folder / "adapter_config.json", "the LoRA adapter's configuration")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, OSError) as exc:
        raise damaged(config, f"not valid JSON ({exc})") from None
    require(folder / "adapter_model.safetensors", "the LoRA adapter's weights")


def saved_base(value: Any, folder: Path, own: str, meta_file: str) -> str:
    """Where the base a saved folder names lies: its own ``base/``, a hub id, or an absolute path.
    Anything else is refused (see the module's docstring)."""
    where = folder / meta_file
    if value == own:
        check_weights(folder / "base", "the folder's own base model")
        return str(folder / "base")
    allowed = (f"its own base ({own!r}, the base/ folder inside it), a hub id (owner/name) or an absolute path "
               "to a model folder or .gguf file")
    if not isinstance(value, str) or not value:
        raise BaseModelError(f"{where}: base {value!r} is not something a saved folder may name: {allowed}")
    if HUB_ID.fullmatch(value) and ".." not in value and "--" not in value and not value.lower().endswith(".gguf"):
        return value
    path = Path(value)
    if not path.is_absolute() or ".." in path.parts:
        raise BaseModelError(f"{where}: base {value!r} is not something a saved folder may name: {allowed} "
                             "(a relative path would mean another place depending on where the command runs)")
    if value.lower().endswith(".gguf") and path.is_file():
        return value
    if not (path / "config.json").is_file():
        raise BaseModelError(f"{where}: base {value!r} does not exist on this machine (or is not a model folder "
                             "with config.json, or a .gguf file)")
    return value


def base_to_save(base: str, own: str) -> str:
    """What a folder records as its base: ``own`` and hub ids as they are, a local path made absolute
    (relative, it would mean another place when the folder is loaded from another working directory)."""
    if base == own:
        return base
    path = Path(base).expanduser()
    if path.exists() or base.lower().endswith(".gguf") or base.startswith((".", "/", "~")):
        return str(path.absolute())
    return base


@contextmanager
def reading(path: Path, what: str):
    """Turn a failure to read ``path`` (already checked to be there) into a refusal naming it."""
    from safetensors import SafetensorError

    try:
        yield
    except BaseModelError:
        raise
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise damaged(path, f"cannot be read as {what} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    except RuntimeError as exc:  # torch's load_state_dict: shapes or names that differ
        raise damaged(path, f"does not fit the folder's description ({str(exc).splitlines()[0]})") from exc
