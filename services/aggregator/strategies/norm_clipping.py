"""Norm clipping (Sun et al., "Can you really backdoor federated learning?", 2019): scale every update
down to at most a bound, then average weighted by sample counts.

Options: `bound` — a fixed norm, or None (default) for the round's median update norm, as FLAME and LASA
use it. Departure: the paper fixes the bound; the adaptive default needs no tuning per model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field

from services.aggregator.strategies.base import AggregationResult, Strategy, StrategyOptions
from services.aggregator.strategies.tensors import apply_delta, client_deltas
from shared.lora_averaging import normalised_weights
from shared.lora_state import LoraState
from shared.updates import ClientUpdate


def clip_to(deltas: np.ndarray, bound: float) -> np.ndarray:
    norms = np.linalg.norm(deltas, axis=1, keepdims=True)
    return deltas * np.minimum(1.0, bound / np.maximum(norms, 1e-12))


class NormClippingOptions(StrategyOptions):
    bound: float | None = Field(None, description="Largest update norm (None: the round's median norm).")


class NormClipping(Strategy):
    name = "norm_clipping"

    def __init__(self, bound: float | None = None) -> None:
        self.bound = bound

    def _aggregate(
        self,
        global_state: LoraState,
        updates: Sequence[ClientUpdate],
        factors: Sequence[float] | None,
        round_index: int | None,
    ) -> AggregationResult:
        deltas, layout = client_deltas(global_state, updates)
        bound = self.bound if self.bound is not None else float(np.median(np.linalg.norm(deltas, axis=1)))
        weights = normalised_weights([u.num_samples for u in updates])
        state = apply_delta(global_state, layout, weights @ clip_to(deltas, bound))
        client_weights = {u.client_id: float(w) for u, w in zip(updates, weights, strict=True)}
        return AggregationResult(state, client_weights, details={"bound": bound})
