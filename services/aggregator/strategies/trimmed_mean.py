"""Coordinate-wise trimmed mean (Yin et al., ICML 2018): per coordinate, drop the `trim` smallest and
`trim` largest values and average the rest.

Options: `trim` (default 1, as the official code; the paper's β·n). Departure: with n <= 2 · trim nothing
would be left, so it falls back to the median (even count: the mean of the middle two) and says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field

from services.aggregator.strategies.base import AggregationResult, Strategy, StrategyOptions
from services.aggregator.strategies.tensors import apply_delta, client_deltas, uniform_weights
from shared.lora_state import LoraState
from shared.updates import ClientUpdate


class TrimmedMeanOptions(StrategyOptions):
    trim: int = Field(1, description="Values dropped at each end, per coordinate.")


class TrimmedMean(Strategy):
    name = "trimmed_mean"

    def __init__(self, trim: int = 1) -> None:
        if trim < 0:
            raise ValueError("trim must be >= 0")
        self.trim = trim

    def _aggregate(
        self,
        global_state: LoraState,
        updates: Sequence[ClientUpdate],
        factors: Sequence[float] | None,
        round_index: int | None,
    ) -> AggregationResult:
        deltas, layout = client_deltas(global_state, updates)
        n, reason = len(updates), ""
        if n > 2 * self.trim:
            ordered = np.sort(deltas, axis=0)
            delta = ordered[self.trim : n - self.trim].mean(axis=0)
        else:
            delta, reason = np.median(deltas, axis=0), f"{n} clients cannot lose 2 x {self.trim}: median"
        state = apply_delta(global_state, layout, delta)
        return AggregationResult(state, uniform_weights(updates, range(n)), reason=reason)
