"""LoRA adapters: creation with a fixed init, state extraction/loading with shape checks, layer-0 B keys."""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from transformers import PreTrainedModel

from shared.config import LoraSettings

LoraState = dict[str, np.ndarray]
_LAYER_INDEX = re.compile(r"layers\.(\d+)\.")


class LoraStateError(ValueError):
    """An adapter state that does not fit the model (keys, shapes, dtypes or values)."""


def peft_lora_config(settings: LoraSettings) -> LoraConfig:
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def attach_lora(model: PreTrainedModel, settings: LoraSettings) -> PeftModel:
    """Wrap `model` with a fresh adapter: A drawn from `settings.init_seed`, B zero (PEFT's init)."""
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(settings.init_seed)
    try:
        peft_model = get_peft_model(model, peft_lora_config(settings))
    finally:
        torch.random.set_rng_state(rng_state)
    assert isinstance(peft_model, PeftModel)
    return peft_model


def get_lora_state(peft_model: PeftModel) -> LoraState:
    """A detached float32 copy of the adapter weights, keyed as PEFT saves them."""
    state = get_peft_model_state_dict(peft_model)
    return {key: value.detach().to(torch.float32).numpy().copy() for key, value in sorted(state.items())}


def validate_lora_state(state: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise LoraStateError(
            f"adapter keys do not match the model: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )
    for key, reference in expected.items():
        value = state[key]
        if tuple(value.shape) != tuple(reference.shape):
            raise LoraStateError(f"{key}: shape {tuple(value.shape)}, expected {tuple(reference.shape)}")
        if not np.issubdtype(value.dtype, np.floating):
            raise LoraStateError(f"{key}: dtype {value.dtype}, expected a floating-point tensor")
        if not np.all(np.isfinite(value)):
            raise LoraStateError(f"{key}: contains NaN or Inf")


def set_lora_state(peft_model: PeftModel, state: Mapping[str, np.ndarray]) -> None:
    validate_lora_state(state, get_lora_state(peft_model))
    tensors = {
        key: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)) for key, value in state.items()
    }
    result = set_peft_model_state_dict(peft_model, tensors)
    if result.unexpected_keys:
        raise LoraStateError(f"PEFT did not accept keys {result.unexpected_keys[:3]}")


def layer_index(key: str) -> int | None:
    match = _LAYER_INDEX.search(key)
    return int(match.group(1)) if match else None


def first_layer_b_keys(keys: list[str] | Mapping[str, object]) -> list[str]:
    """The `lora_B` keys of the lowest-index transformer layer, sorted (the method's `first_B` policy)."""
    b_keys = [k for k in keys if "lora_B" in k and layer_index(k) is not None]
    if not b_keys:
        raise LoraStateError("adapter has no per-layer lora_B tensors")
    first = min(layer_index(k) for k in b_keys)  # type: ignore[type-var]
    return sorted(k for k in b_keys if layer_index(k) == first)


def flatten_keys(state: Mapping[str, np.ndarray], keys: list[str]) -> np.ndarray:
    """Concatenate the given tensors flattened row-major, in the given order, as float32."""
    return np.concatenate([np.asarray(state[k], dtype=np.float32).reshape(-1) for k in keys])
