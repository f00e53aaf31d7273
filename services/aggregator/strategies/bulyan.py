"""Bulyan (El Mhamdi et al., ICML 2018): pick θ = n − 2f updates by repeated Krum (each pick rescored on
the updates left), then per coordinate average the β = θ − 2f values closest to the selection's median.

Options: `num_attackers` (f, required; see Krum). Departure: the paper needs n >= 4f + 3; with fewer
clients f is lowered to the largest value that fits and the result says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field

from services.aggregator.strategies.base import AggregationResult, Strategy, StrategyOptions
from services.aggregator.strategies.krum import check_attackers, krum_scores
from services.aggregator.strategies.tensors import apply_delta, client_deltas, uniform_weights
from shared.lora_state import LoraState
from shared.updates import ClientUpdate


class BulyanOptions(StrategyOptions):
    num_attackers: int = Field(description="f: Byzantine clients assumed per round (required).")


class Bulyan(Strategy):
    name = "bulyan"

    def __init__(self, *, num_attackers: int) -> None:
        check_attackers(num_attackers)
        self.num_attackers = num_attackers

    def _aggregate(
        self,
        global_state: LoraState,
        updates: Sequence[ClientUpdate],
        factors: Sequence[float] | None,
        round_index: int | None,
    ) -> AggregationResult:
        deltas, layout = client_deltas(global_state, updates)
        n = len(updates)
        f = min(self.num_attackers, max(0, (n - 3) // 4))
        reason = "" if f == self.num_attackers else f"{n} clients allow f={f} (< {self.num_attackers})"
        remaining = list(range(n))
        selected: list[int] = []
        while len(selected) < n - 2 * f:
            scores = krum_scores(deltas[remaining], f)
            selected.append(remaining.pop(int(np.argmin(scores))))
        chosen = deltas[selected]
        keep = max(1, len(selected) - 2 * f)
        distance = np.abs(chosen - np.median(chosen, axis=0))
        closest = np.argsort(distance, axis=0, kind="stable")[:keep]
        delta = np.take_along_axis(chosen, closest, axis=0).mean(axis=0)
        state = apply_delta(global_state, layout, delta)
        return AggregationResult(state, uniform_weights(updates, selected), reason=reason)
