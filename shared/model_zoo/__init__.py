"""Base models by name, loaded offline: `smollm2-135m` (real) and `tiny-llama` (random, for tests)."""

from shared.model_zoo.registry import MODEL_NAMES, LoadedModel, load_base_model, load_tokenizer

__all__ = ["MODEL_NAMES", "LoadedModel", "load_base_model", "load_tokenizer"]
