"""Krum and Multi-Krum (Blanchard et al. 2017).

score_i = sum of squared distances from client i to its n − f − 2 nearest others. Krum keeps the
lowest-scoring client; Multi-Krum averages the m lowest (m = n − f by default). f, the number of attackers
assumed per round, is a setting (the official code gives it the true count: an oracle).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.aggregator.strategies.base import AggregationResult, Strategy
from services.aggregator.strategies.tensors import (
    apply_delta,
    client_deltas,
    pairwise_sq_distances,
    uniform_weights,
)
from shared.lora_state import LoraState
from shared.updates import ClientUpdate


def krum_scores(deltas: np.ndarray, num_attackers: int) -> np.ndarray:
    n = len(deltas)
    neighbours = max(1, n - num_attackers - 2)
    distances = pairwise_sq_distances(deltas)
    np.fill_diagonal(distances, np.inf)
    nearest = np.sort(distances, axis=1)[:, : min(neighbours, n - 1)]
    return nearest.sum(axis=1) if n > 1 else np.zeros(1)


class Krum(Strategy):
    name = "krum"

    def __init__(self, num_attackers: int = 1, multi: bool = False, num_selected: int | None = None) -> None:
        self.num_attackers, self.multi, self.num_selected = num_attackers, multi, num_selected

    def aggregate(
        self, global_state: LoraState, updates: Sequence[ClientUpdate], factors: Sequence[float] | None = None
    ) -> AggregationResult:
        deltas, layout = client_deltas(global_state, updates)
        scores = krum_scores(deltas, self.num_attackers)
        n = len(updates)
        keep = (self.num_selected or max(1, n - self.num_attackers)) if self.multi else 1
        selected = np.argsort(scores, kind="stable")[:keep]
        state = apply_delta(global_state, layout, deltas[selected].mean(axis=0))
        return AggregationResult(
            state,
            uniform_weights(updates, selected.tolist()),
            details={"scores": dict(zip([u.client_id for u in updates], scores.tolist(), strict=True))},
        )


class MultiKrum(Krum):
    name = "multi_krum"

    def __init__(self, num_attackers: int = 1, num_selected: int | None = None) -> None:
        super().__init__(num_attackers, multi=True, num_selected=num_selected)
