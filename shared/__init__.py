"""Shared building blocks of safe-fedllm: typed config, model zoo, data pools, LoRA, training, evaluation."""
