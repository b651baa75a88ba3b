"""The bitsandbytes CPU trap (STACK.md): after a generation pass, LoRA gradients over 4-bit layers go wrong
on CPUs with AVX512-BF16. ``guard_4bit_for_training`` must keep them equal to those of a full-precision
model holding the same (dequantised) weights. The 4-bit model is loaded on the CPU directly here: the
project's own loader refuses 4-bit without a CUDA GPU."""

import copy
from pathlib import Path

import pytest
import torch

from rlhf_organic.models.loading import guard_4bit_for_training
from rlhf_organic.models.tiny import save_tiny

bnb = pytest.importorskip("bitsandbytes")


def _has_avx512_bf16() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.is_file() and "avx512_bf16" in cpuinfo.read_text()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    texts = ["hello there how are you", "i like trains and cats", "the weather is nice today"] * 50
    # hidden 128: bitsandbytes' CPU repacking needs rows of at least one 64-value block
    return save_tiny(tmp_path_factory.mktemp("q4") / "base", texts, kind="decoder", vocab_size=300, hidden=128)


def _lora_grads_after_generation(base, guard: bool):
    """(LoRA gradients of the 4-bit model after a generation pass, those of the fp32 reference)."""
    from bitsandbytes.functional import dequantize_4bit
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    quantized = AutoModelForCausalLM.from_pretrained(base, quantization_config=config, device_map={"": "cpu"})
    if guard:
        assert guard_4bit_for_training(quantized) > 0
    reference = AutoModelForCausalLM.from_pretrained(base)
    layers = dict(quantized.named_modules())
    with torch.no_grad():
        for name, module in reference.named_modules():
            if isinstance(layers.get(name), bnb.nn.Linear4bit):
                weight = layers[name].weight
                module.weight.copy_(dequantize_4bit(weight.data, weight.quant_state).float())
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False)
    torch.manual_seed(0)
    quantized = get_peft_model(quantized, lora)
    torch.manual_seed(0)
    reference = get_peft_model(reference, copy.deepcopy(lora))
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    quantized.eval()
    with torch.no_grad():
        quantized.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    grads = []
    for model in (quantized, reference):
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    return grads


def test_guarded_4bit_lora_gradients_after_generation_match_full_precision(base):
    quantized, reference = _lora_grads_after_generation(base, guard=True)
    assert quantized.keys() == reference.keys() and len(quantized) > 0
    for name, grad in reference.items():
        assert grad.abs().sum() > 0
        assert torch.allclose(quantized[name], grad, rtol=1e-3, atol=1e-6), name


@pytest.mark.skipif(not _has_avx512_bf16(), reason="the trap needs a CPU with AVX512-BF16")
def test_without_the_guard_the_trap_is_real_here(base):
    """Shows the guard is needed on this CPU (if bitsandbytes fixes the trap, this fails: drop the guard)."""
    quantized, reference = _lora_grads_after_generation(base, guard=False)
    worst = max(float((quantized[n] - g).norm() / g.norm()) for n, g in reference.items())
    assert worst > 0.1


def test_hub_kernels_auto_never_asks_for_them_offline(monkeypatch):
    """transformers 5.25 asks the hub for kernels on CUDA by default and fails offline; auto does not ask then."""
    import importlib.util

    from rlhf_organic.models.loading import use_hub_kernels

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not use_hub_kernels("auto", "cuda") and not use_hub_kernels("auto", "cpu")
    assert use_hub_kernels("on", "cuda") and not use_hub_kernels("off", "cuda")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert use_hub_kernels("auto", "cuda") == (importlib.util.find_spec("kernels") is not None)
    assert not use_hub_kernels("auto", "cpu")


def test_offline_load_with_kernels_installed_uses_none(tmp_path, monkeypatch):
    pytest.importorskip("kernels")
    from rlhf_organic.models.loading import load_base
    from rlhf_organic.models.tiny import save_tiny

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    save_tiny(tmp_path / "m", ["hello world"] * 20, layers=1)
    assert load_base(str(tmp_path / "m"), causal_lm=True, hub_kernels="auto").use_kernels is False
    assert load_base(str(tmp_path / "m"), causal_lm=True, hub_kernels="off").use_kernels is False
