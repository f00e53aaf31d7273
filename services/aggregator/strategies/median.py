"""Coordinate-wise median (Yin et al., ICML 2018) of the clients' updates.

Options: `even` — the convention for an even number of clients, which every default round (4 clients)
hits: "mean" averages the two middle values (the textbook median, numpy; the default), "lower" takes the
lower one (torch.median, as the official code does). No departure from the paper otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from services.aggregator.strategies.base import AggregationResult, Strategy, StrategyOptions
from services.aggregator.strategies.tensors import (
    EvenMedian,
    apply_delta,
    check_choice,
    client_deltas,
    coordinate_median,
    uniform_weights,
)
from shared.lora_state import LoraState
from shared.updates import ClientUpdate


class MedianOptions(StrategyOptions):
    even: EvenMedian = Field("mean", description="An even count: mean of the middle two, or the lower one.")


class Median(Strategy):
    name = "median"

    def __init__(self, even: EvenMedian = "mean") -> None:
        check_choice("even", even, ("mean", "lower"))
        self.even = even

    def _aggregate(
        self,
        global_state: LoraState,
        updates: Sequence[ClientUpdate],
        factors: Sequence[float] | None,
        round_index: int | None,
    ) -> AggregationResult:
        deltas, layout = client_deltas(global_state, updates)
        state = apply_delta(global_state, layout, coordinate_median(deltas, self.even))
        return AggregationResult(state, uniform_weights(updates, range(len(updates))))
