"""Base models, loaded offline: `smollm2-135m` (real), `tiny-llama` (random, for tests), or a checkpoint
directory of a supported family (Llama, Qwen2, Mistral, Gemma), by path or by a registered name."""

from shared.model_zoo.registry import MODEL_NAMES, LoadedModel, load_base_model, load_tokenizer, model_key

__all__ = ["MODEL_NAMES", "LoadedModel", "load_base_model", "load_tokenizer", "model_key"]
