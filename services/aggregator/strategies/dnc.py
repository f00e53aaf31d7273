"""Divide-and-Conquer (Shejwalkar & Houmansadr 2021): spectral outlier removal on random coordinates.

Each iteration samples `subsample` coordinates (seeded), centres the updates, projects them on the top
right-singular vector and removes the `num_attackers` with the largest squared projection; clients removed
in any iteration are dropped (the official code: one iteration, an oracle attacker count).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.aggregator.strategies.base import AggregationResult, Strategy
from services.aggregator.strategies.tensors import apply_delta, client_deltas, uniform_weights
from shared.lora_state import LoraState
from shared.updates import ClientUpdate


class DnC(Strategy):
    name = "dnc"

    def __init__(
        self, num_attackers: int = 1, subsample: int = 10_000, iterations: int = 1, seed: int = 2023
    ) -> None:
        self.num_attackers, self.subsample = num_attackers, subsample
        self.iterations, self.seed = iterations, seed

    def aggregate(
        self, global_state: LoraState, updates: Sequence[ClientUpdate], factors: Sequence[float] | None = None
    ) -> AggregationResult:
        deltas, layout = client_deltas(global_state, updates)
        n, dim = deltas.shape
        rng = np.random.default_rng(self.seed)
        kept = set(range(n))
        for _ in range(self.iterations):
            coords = rng.choice(dim, size=min(self.subsample, dim), replace=False)
            sample = deltas[:, coords]
            centred = sample - sample.mean(axis=0)
            top = np.linalg.svd(centred, full_matrices=False)[2][0]
            outlier = (centred @ top) ** 2
            removed = np.argsort(outlier, kind="stable")[::-1][: self.num_attackers]
            kept &= set(range(n)) - set(removed.tolist())
        selected = sorted(kept) or list(range(n))
        state = apply_delta(global_state, layout, deltas[selected].mean(axis=0))
        return AggregationResult(state, uniform_weights(updates, selected))
