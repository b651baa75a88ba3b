"""The reward model: a base model with a LoRA adapter, pooled, and a linear score head.

``score = head(pool(backbone(context + response)))[0]``; with ``head.reasons`` the head has one more
logit per dislike reason. Encoders pool the mean of all tokens, decoder-only models the last real
token (wherever the padding is). Only the LoRA parameters and the head are trained.

On disk (``MODEL_DIR``): ``adapter/`` (a PEFT adapter folder), ``head.safetensors``,
``reward_model.json`` (base, pooling, reasons, max length), ``spec.yaml``, and ``base/`` when the
base is a tiny model built from a config.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..models.loading import compute_autocast, is_decoder, load_base, load_tokenizer
from ..models.tiny import save_tiny
from ..sequences import cut_left, format_dialogue
from .spec import RewardSpec

META_FILE = "reward_model.json"


def encode(tokenizer, contexts, responses, max_length: int) -> list[list[int]]:
    """Token ids of each (context, response), cut from the left so the response always fits, keeping the
    first token (``sequences.cut_left``: a sequence must not start mid-dialogue)."""
    texts = [format_dialogue(tokenizer, c, r) for c, r in zip(contexts, responses)]
    return [cut_left(ids, max_length) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """[batch, seq, dim] -> [batch, dim]: the last real token, the first token, or the masked mean."""
    if how == "last":  # position of the last 1 in the mask: right or left padding alike
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (mask * positions).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if how == "first":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


class RewardModel(nn.Module):
    def __init__(self, backbone: nn.Module, pooling: str, n_reasons: int = 0):
        super().__init__()
        self.backbone, self.pooling, self.n_reasons = backbone, pooling, n_reasons
        self.precision = "auto"  # train.precision (models.loading.compute_autocast); saved in the folder's meta
        self.head = nn.Linear(backbone.config.hidden_size, 1 + n_reasons)
        nn.init.normal_(self.head.weight, std=1 / (backbone.config.hidden_size + 1))
        nn.init.zeros_(self.head.bias)
        self.head.to(next(backbone.parameters()).device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores [batch], reason logits [batch, n_reasons])."""
        with compute_autocast(self.backbone, self.precision):  # bf16 compute on a bf16 / 4-bit base, or asked for
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        out = self.head(pool(hidden, attention_mask, self.pooling).to(self.head.weight.dtype))
        # Views of ``out``, not copies: a copy is laid out differently and changes the losses' float rounding
        # (the quick start's clean judge moved by 3e-4 AUC). Under FSDP this forward is the root's, and FSDP
        # warns that it returns views; harmless here, since nothing writes into them.
        return out[:, 0], out[:, 1:]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def resolve_pooling(spec: RewardSpec, backbone) -> str:
    if spec.head.pooling != "auto":
        return spec.head.pooling
    return "last" if is_decoder(backbone) else "mean"


def lora_config(spec: RewardSpec):
    from peft import LoraConfig

    return LoraConfig(
        r=spec.lora.r, lora_alpha=spec.lora.alpha, lora_dropout=spec.lora.dropout,
        target_modules=spec.lora.target_modules, modules_to_save=spec.lora.modules_to_save or None,
        task_type="FEATURE_EXTRACTION",
    )


def base_location(spec: RewardSpec, model_dir: Path) -> str:
    return str(model_dir / "base") if spec.base == "tiny" else spec.base


def build_reward_model(spec: RewardSpec, model_dir: Path, texts=None, reasons: list[str] = (), seed: int = 0):
    """A fresh reward model (LoRA adapter + head) and its tokenizer.

    With ``base: tiny`` the tiny base is first built into ``model_dir/base`` with a tokenizer trained
    on ``texts``.
    """
    from peft import get_peft_model

    if spec.base == "tiny":
        if texts is None:
            raise ValueError("a tiny base needs texts to train its tokenizer on")
        t = spec.tiny
        save_tiny(model_dir / "base", texts, kind=t.kind, vocab_size=t.vocab_size, seed=seed, hidden=t.hidden,
                  layers=t.layers, heads=t.heads, max_positions=max(512, spec.max_length))
    where = base_location(spec, model_dir)
    tokenizer = load_tokenizer(where, trust_remote_code=spec.trust_remote_code)
    backbone = load_base(where, dtype=spec.dtype, quantization=spec.quantization, trust_remote_code=spec.trust_remote_code,
                         hub_kernels=spec.hub_kernels, attention=spec.attention)
    pooling = resolve_pooling(spec, backbone)
    torch.manual_seed(seed)
    model = RewardModel(get_peft_model(backbone, lora_config(spec)), pooling, len(reasons))
    model.precision = spec.train.precision
    return model, tokenizer


def save_reward_model(model: RewardModel, tokenizer, spec: RewardSpec, reasons: list[str], model_dir: Path) -> None:
    from safetensors.torch import save_file

    from ..models.folder import base_to_save
    from .spec import dump_spec

    model.backbone.save_pretrained(model_dir / "adapter")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}, model_dir / "head.safetensors")
    meta = {"format": 1, "base": base_to_save(spec.base, "tiny"), "pooling": model.pooling, "reasons": list(reasons),
            "max_length": spec.max_length, "dtype": spec.dtype, "quantization": spec.quantization, "attention": spec.attention,
            "trust_remote_code": spec.trust_remote_code, "precision": model.precision}
    (model_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    (model_dir / "spec.yaml").write_text(dump_spec(spec))


def read_reward_meta(model_dir: Path) -> dict:
    """``reward_model.json`` of ``model_dir``, checked field by field (``models/folder.py``)."""
    from ..models.folder import RewardMeta, read_meta

    return read_meta(model_dir, META_FILE, RewardMeta, "reward-model")


def check_reward_files(model_dir: Path, meta: dict) -> str:
    """Where the base of the reward-model folder lies, once every file is checked to be in place and of
    the kind this package writes; refused naming the folder and the file otherwise."""
    from ..models.folder import check_adapter, require, saved_base

    where = saved_base(meta["base"], model_dir, "tiny", META_FILE)
    check_adapter(model_dir / "adapter")
    require(model_dir / "head.safetensors", "the score head")
    return where


def load_head(model_dir: Path, head: nn.Linear) -> nn.Linear:
    """``head`` with the score head of ``model_dir`` loaded into it; refused by name when the file cannot
    be read or has another size than the folder's description says."""
    from safetensors.torch import load_file

    from ..models.folder import reading

    path = model_dir / "head.safetensors"
    with reading(path, "the score head"):
        head.load_state_dict(load_file(path))
    return head


def load_reward_model(model_dir: str | Path, quantization: str | None = None, *, trust_remote_code: bool = False):
    """(model in eval mode, tokenizer, meta) from a folder written by ``save_reward_model``.

    ``trust_remote_code`` is the caller's (the recipe's) decision, never the folder's: a folder whose base
    needs its own code is refused with a clear message unless the caller allows it. A damaged or
    tampered folder is refused before anything in it is read (``check_reward_files``).
    """
    from peft import PeftModel

    from ..models.folder import reading
    from ..models.loading import BaseModelError, how_to_allow_remote_code

    model_dir = Path(model_dir)
    meta = read_reward_meta(model_dir)
    if meta.get("trust_remote_code") and not trust_remote_code:
        raise BaseModelError(f"the reward model in {model_dir} was trained on a base that runs its own code "
                             f"({meta['base']}); loading it needs trust_remote_code, which only you can turn on, not "
                             f"the folder: read that code, then, if you trust it, {how_to_allow_remote_code()}")
    where = check_reward_files(model_dir, meta)
    tokenizer = load_tokenizer(where, trust_remote_code=trust_remote_code)
    backbone = load_base(where, dtype=meta["dtype"], quantization=quantization or meta["quantization"],
                         trust_remote_code=trust_remote_code, attention=meta.get("attention", "auto"))  # scored as trained
    with reading(model_dir / "adapter" / "adapter_model.safetensors", "the LoRA adapter"):
        peft = PeftModel.from_pretrained(backbone, model_dir / "adapter")
    model = RewardModel(peft, meta["pooling"], len(meta["reasons"]))
    model.precision = meta.get("precision", "auto")  # scored as trained
    load_head(model_dir, model.head)
    return model.eval(), tokenizer, meta
