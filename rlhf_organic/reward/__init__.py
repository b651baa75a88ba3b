"""Reward models from thumbs and A/B choices, trust-weighted, LoRA (QLoRA on a CUDA GPU)."""
