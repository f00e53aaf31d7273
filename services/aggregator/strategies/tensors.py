"""Helpers shared by strategies, all pure numpy: flattening, deltas, distances, medians, per-round randomness.

The weighted mean of adapter states (FedAvg's math) lives in `shared.lora_averaging`: the probe's drift check
uses it too."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from shared.lora_state import LoraState, validate_lora_state
from shared.updates import ClientUpdate


@dataclass(frozen=True)
class FlatLayout:
    """How a LoRA state maps to one flat vector: sorted keys, their shapes and offsets."""

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, state: LoraState) -> FlatLayout:
        keys = tuple(sorted(state))
        return cls(keys, tuple(tuple(np.shape(state[k])) for k in keys))

    def flatten(self, state: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(state[k], dtype=np.float64).reshape(-1) for k in self.keys])

    def unflatten(self, vector: np.ndarray) -> LoraState:
        out, offset = {}, 0
        for key, shape in zip(self.keys, self.shapes, strict=True):
            size = int(np.prod(shape))
            out[key] = vector[offset : offset + size].reshape(shape).astype(np.float32)
            offset += size
        return out


def client_deltas(global_state: LoraState, updates: Sequence[ClientUpdate]) -> tuple[np.ndarray, FlatLayout]:
    """[n_clients, D] float64 matrix of updates (local − global), checked against the global's layout."""
    if not updates:
        raise ValueError("no client updates")
    layout = FlatLayout.of(global_state)
    base = layout.flatten(global_state)
    for update in updates:
        validate_lora_state(update.lora_state, global_state)
    return np.stack([layout.flatten(u.lora_state) - base for u in updates]), layout


def apply_delta(global_state: LoraState, layout: FlatLayout, delta: np.ndarray) -> LoraState:
    return layout.unflatten(layout.flatten(global_state) + delta)


def pairwise_sq_distances(x: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", x, x)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)


def cosine_similarities(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.where(norms < 1e-12, 1.0, norms)
    return unit @ unit.T


def uniform_weights(updates: Sequence[ClientUpdate], kept: Sequence[int]) -> dict[str, float]:
    """Normalised weight per client when the `kept` clients share the aggregate equally."""
    kept_set = set(kept)
    return {u.client_id: (1 / len(kept_set) if i in kept_set else 0.0) for i, u in enumerate(updates)}


EvenMedian = Literal["mean", "lower"]


def check_choice(option: str, value: object, allowed: Sequence[object]) -> None:
    """Options are checked when a strategy is built, not when its first round closes."""
    if value not in allowed:
        raise ValueError(f"{option} must be one of {list(allowed)}, got {value!r}")


def coordinate_median(x: np.ndarray, even: EvenMedian, axis: int = 0) -> np.ndarray:
    """Median along `axis`. With an even count, "mean" averages the two middle values (numpy, the textbook
    median); "lower" takes the lower one (torch.median, hence the official code)."""
    check_choice("even", even, ("mean", "lower"))
    if even == "mean":
        return np.median(x, axis=axis)
    return np.take(np.sort(x, axis=axis), (x.shape[axis] - 1) // 2, axis=axis)


def round_rng(seed: int, round_index: int) -> np.random.Generator:
    """A generator fresh for each round and reproducible for a resumed one."""
    return np.random.default_rng([seed, round_index])


def expected_attackers(clients_per_round: int, num_malicious: int, num_clients: int) -> int:
    """The official code's f: malicious clients expected among the sampled ones, rounded."""
    return round(clients_per_round * num_malicious / num_clients)
