"""LoRA adapter states as plain arrays: key layout (layers, first-layer B), validation, flattening.

Pure numpy, so that services which only handle adapter tensors (probe service, aggregation strategies)
do not import torch or PEFT.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

LoraState = dict[str, np.ndarray]
_LAYER_INDEX = re.compile(r"layers\.(\d+)\.")


class LoraStateError(ValueError):
    """An adapter state that does not fit the model (keys, shapes, dtypes or values)."""


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
