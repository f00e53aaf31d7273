"""Weighted averaging of LoRA adapter states (FedAvg's math), pure numpy.

Shared by the aggregator's strategies and the probe's drift check (which replays FedAvg rounds offline).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from shared.lora_state import LoraState, validate_lora_state


def stack_states(states: Sequence[LoraState], reference: LoraState) -> dict[str, np.ndarray]:
    """key -> array [n_clients, *shape]; every state is checked against the reference's keys and shapes."""
    if not states:
        raise ValueError("no client states to stack")
    for state in states:
        validate_lora_state(state, reference)
    return {
        key: np.stack([np.asarray(s[key], dtype=np.float32) for s in states]) for key in sorted(reference)
    }


def normalised_weights(weights: Sequence[float] | np.ndarray) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or np.any(~np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"aggregation weights must be finite and non-negative, got {weights}")
    total = w.sum()
    if total <= 0:
        raise ValueError("aggregation weights sum to zero")
    return w / total


def weighted_mean(stacked: Mapping[str, np.ndarray], weights: Sequence[float] | np.ndarray) -> LoraState:
    w = normalised_weights(weights)
    return {key: np.tensordot(w, values, axes=1).astype(np.float32) for key, values in stacked.items()}
