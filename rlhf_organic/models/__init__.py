"""Base models: loading (hub id, local folder, GGUF file, tiny model built from a config), quantization."""

from .loading import BaseModelError, load_base, load_tokenizer

__all__ = ["BaseModelError", "load_base", "load_tokenizer"]
