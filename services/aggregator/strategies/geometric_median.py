"""Geometric median of the updates (RFA, Pillutla et al., IEEE TSP 2022), by smoothed Weiszfeld iterations.

Each update is weighted by its sample count, as in RFA. Options: `iterations` (Weiszfeld steps, at most;
it stops early when the point moves less than 1e-8 relative). Departure: distances are floored at 1e-8
instead of RFA's smoothing ν; no official-code counterpart.
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


def geometric_median(
    points: np.ndarray, weights: np.ndarray, iterations: int = 100, eps: float = 1e-8
) -> tuple[np.ndarray, np.ndarray]:
    """(median, final per-point weights) minimising sum_i w_i ||z − x_i||."""
    z = weights @ points
    for _ in range(iterations):
        distances = np.maximum(np.linalg.norm(points - z, axis=1), eps)
        beta = weights / distances
        new = beta @ points / beta.sum()
        if np.linalg.norm(new - z) <= eps * max(1.0, float(np.linalg.norm(z))):
            z = new
            break
        z = new
    return z, beta / beta.sum()


class GeometricMedianOptions(StrategyOptions):
    iterations: int = Field(100, description="Weiszfeld steps, at most.")


class GeometricMedian(Strategy):
    name = "geometric_median"

    def __init__(self, iterations: int = 100) -> None:
        self.iterations = iterations

    def _aggregate(
        self,
        global_state: LoraState,
        updates: Sequence[ClientUpdate],
        factors: Sequence[float] | None,
        round_index: int | None,
    ) -> AggregationResult:
        deltas, layout = client_deltas(global_state, updates)
        weights = normalised_weights([u.num_samples for u in updates])
        median, effective = geometric_median(deltas, weights, self.iterations)
        client_weights = {u.client_id: float(w) for u, w in zip(updates, effective, strict=True)}
        return AggregationResult(apply_delta(global_state, layout, median), client_weights)
