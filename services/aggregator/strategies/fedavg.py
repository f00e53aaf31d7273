"""FedAvg (McMahan et al., AISTATS 2017): the sample-weighted mean of the clients' full local adapters.

Options: none. With security factors s_i it is the Safe-FedLLM aggregation rule: weights n_i · s_i. All
clients start a round from the same global adapter, so averaging states equals averaging deltas.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.aggregator.strategies.base import AggregationResult, Strategy
from shared.lora_averaging import normalised_weights, stack_states, weighted_mean
from shared.lora_state import LoraState
from shared.updates import ClientUpdate


class FedAvg(Strategy):
    name = "fedavg"
    uses_factors = True

    def _aggregate(
        self,
        global_state: LoraState,
        updates: Sequence[ClientUpdate],
        factors: Sequence[float] | None,
        round_index: int | None,
    ) -> AggregationResult:
        factors = [1.0] * len(updates) if factors is None else list(factors)
        if len(factors) != len(updates):
            raise ValueError(f"{len(factors)} factors for {len(updates)} updates")
        raw = [u.num_samples * f for u, f in zip(updates, factors, strict=True)]
        if sum(raw) <= 0:
            return AggregationResult(
                dict(global_state), {u.client_id: 0.0 for u in updates}, True, "all weights zero"
            )
        stacked = stack_states([u.lora_state for u in updates], global_state)
        weights = normalised_weights(raw)
        return AggregationResult(
            weighted_mean(stacked, weights),
            {u.client_id: float(w) for u, w in zip(updates, weights, strict=True)},
        )
