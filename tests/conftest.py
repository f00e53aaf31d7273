"""Shared fixtures. Heavy objects (pools, the tiny model) are built once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def pools():
    from shared.config import runtime_settings
    from shared.data.pools import build_pools

    return build_pools(runtime_settings().data_dir)


@pytest.fixture(scope="session")
def tiny():
    """The tiny-llama base (its pre-stage is built once and cached)."""
    import torch

    from shared.model_zoo import load_base_model

    torch.set_num_threads(2)
    return load_base_model("tiny-llama")
