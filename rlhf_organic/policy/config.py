"""The ``policy`` recipe section: base model, LoRA, training, evaluation, and one sub-section per method
(so switching ``method`` keeps everyone's settings). Each method's ``Config`` lives in its module; the
``method`` choice and the sub-sections are built from the registry of method contracts, and rebuilt
when a method is registered at run time."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, create_model

from ..contracts import set_fields
from ..models.loading import ATTENTION_HELP, Attention, DType, HubKernels, Quantization
from ..section import MICRO_BATCH_HELP, PRECISION_HELP, MicroBatchSize, Precision, Section
from ..settings import apply_overrides, parse_overrides, typed_overrides, validate_settings
from .methods import METHODS


class TinyPolicyBase(Section):
    """``tiny``: a small Llama built from a config when ``base: tiny``, then taught to imitate the logged
    bot (plain cross-entropy on every bot reply of the training conversations) so that the policy starts
    where the deployed bot was, good and bad replies alike."""

    hidden: int = Field(64, ge=8, le=1024)
    layers: int = Field(2, ge=1, le=12)
    heads: int = Field(4, ge=1, le=16)
    vocab_size: int = Field(2000, ge=300, le=50_000)
    imitation_epochs: float = Field(2.0, ge=0, description="passes of imitation over the logged bot replies")
    imitation_max: int = Field(20_000, ge=1, description="bot replies used for imitation, at most")
    imitation_lr: float = Field(3e-3, gt=0)


class PolicyLora(Section):
    r: int = Field(8, ge=1, le=512)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: str | list[str] = Field("all-linear", description="PEFT target_modules")


class PolicyTrain(Section):
    epochs: float = Field(1.0, gt=0, description="passes over the method's training items (fractions allowed)")
    batch_size: int = Field(8, ge=1, description="pairs (DPO) or completions (KTO, Cringe) per step")
    micro_batch_size: MicroBatchSize = Field(None, description=MICRO_BATCH_HELP)
    precision: Precision = Field("auto", description=PRECISION_HELP)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    group_by_length: bool = Field(True, description="batch items of similar length: less padding, same data")
    max_items: int | None = Field(None, ge=1, description="train on at most this many items (random subset)")
    gradient_checkpointing: bool = Field(
        False, description="recompute each layer's activations in the backward pass: far less memory, about a third slower")
    keep_optimizer: bool = Field(
        True, description="online methods (rejection sampling, iterative Cringe, PPO, RLOO, GRPO, online DPO): one optimizer state and one "
        "learning-rate schedule across rounds; false: a fresh optimizer and warm-up every round")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="a NaN / infinite loss or gradient: stop with a message naming the step and batch, or skip the batch")


class Sampling(Section):
    """How replies are sampled from the policy (evaluation, on-policy pairs, iterative Cringe)."""

    temperature: float = Field(0.7, ge=0, description="0: greedy")
    top_p: float = Field(0.9, gt=0, le=1)
    max_new_tokens: int = Field(32, ge=1)
    batch_size: int = Field(32, ge=1, description="prompts per generate() call")


class PolicyEval(Section):
    contexts: int = Field(128, ge=0, description="held-out contexts to generate replies for (0: no evaluation)")
    sampling: Sampling = Sampling()
    samples_shown: int = Field(20, ge=0, description="side-by-side samples written to samples.md")


class RewardUse(Section):
    share_base: bool = Field(
        True, description="load the reward model as a second adapter + head on the policy's base when both "
        "use the same base (one copy in memory); otherwise it gets its own copy",
    )


def _choice() -> tuple[Any, Any]:
    """``method``: one of the registered methods (its annotation and field)."""
    return Literal[tuple(METHODS)], Field("kto", description=f"{METHODS.sentence()} (see docs/policy.md)")


class _PolicySettings(Section):
    """``policy``: fine-tune the dialogue policy with LoRA from the organic data, weighted by trust."""

    method: Literal[tuple(METHODS)] = _choice()[1]  # type: ignore[valid-type]
    base: str = Field("tiny", description="'tiny', a hub id, a local model folder or a .gguf file")
    tiny: TinyPolicyBase = TinyPolicyBase()
    dtype: DType = "float32"
    quantization: Quantization = Field("none", description="4bit / 8bit (QLoRA) need a CUDA GPU")
    hub_kernels: HubKernels = Field("auto", description="hub kernels (optimised layers fetched from the model hub): auto uses them "
        "on a CUDA GPU when the hub is reachable and never fails offline; on / off force them")
    attention: Attention = Field("auto", description=ATTENTION_HELP)
    trust_remote_code: bool = Field(
        False, description="let the base (and a reward model's base loaded beside it) run code that ships with it "
        "(its config's auto_map); off unless you have read that code")
    weighted: bool = Field(True, description="weight examples by the trust stage (false: uniform weights)")
    lora: PolicyLora = PolicyLora()
    max_prompt_length: int = Field(128, ge=4, description="prompt tokens kept (cut from the left)")
    max_completion_length: int = Field(64, ge=2, description="reply tokens kept (cut from the right)")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="conversations held out for evaluation")
    train: PolicyTrain = PolicyTrain()
    eval: PolicyEval = PolicyEval()
    reward_model: RewardUse = RewardUse()
    export_merged: bool = Field(False, description="also write the base with the adapter merged in (merged/)")

    def method_config(self):
        return getattr(self, self.method)


def _method_sections() -> dict[str, tuple[Any, Any]]:
    """One sub-section per registered method."""
    return {name: (contract.settings, Field(default_factory=contract.settings, description=contract.description))
            for name, contract in METHODS.items()}


PolicySection = create_model("PolicySection", __base__=_PolicySettings, **_method_sections())  # type: ignore[call-overload]
_BUILT = set(METHODS)


def _rebuild() -> None:
    """After a method is registered or removed: the same class, with the current methods (``method``
    keeps its place, new sub-sections go last)."""
    global _BUILT
    set_fields(PolicySection, {"method": _choice(), **_method_sections()}, drop=_BUILT - set(METHODS))
    _BUILT = set(METHODS)


METHODS.subscribe(_rebuild)


def settings_from_cli(method: str, sets: list[str]) -> PolicySection:
    """A PolicySection from ``--method`` and ``--set key=value`` items (``train.epochs=2``, ``kto.beta=0.2``)."""
    parsed = parse_overrides(sets)
    data = apply_overrides({"method": method}, parsed)
    return validate_settings(PolicySection, data, "policy settings", overridden=typed_overrides(sets, parsed))
