"""Coordinate-wise median (Yin et al. 2018) of the clients' adapters."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.aggregator.strategies.base import AggregationResult, Strategy
from services.aggregator.strategies.tensors import apply_delta, client_deltas, uniform_weights
from shared.lora_state import LoraState
from shared.updates import ClientUpdate


class Median(Strategy):
    name = "median"

    def aggregate(
        self, global_state: LoraState, updates: Sequence[ClientUpdate], factors: Sequence[float] | None = None
    ) -> AggregationResult:
        deltas, layout = client_deltas(global_state, updates)
        state = apply_delta(global_state, layout, np.median(deltas, axis=0))
        return AggregationResult(state, uniform_weights(updates, range(len(updates))))
