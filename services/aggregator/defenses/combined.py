"""A Safe-FedLLM level combined with an aggregation rule (the official code allows any pairing).

With FedAvg this is the method: the safety gate, then FedAvg weighted by n_i · max(s_i, s_min). With a
robust rule the official code keeps only the gate (its robust branches ignore the levels' weights):
`combine="gate"`. `combine="filter"` also withholds the updates whose weight max(s_i, s_min) is 0 (frozen
malicious or fully flagged clients) from the robust rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.aggregator.defenses.base import DefenseSettings
from services.aggregator.defenses.gate import gated_fedavg, safety_gate
from services.aggregator.strategies import AggregationResult, FedAvg, Strategy
from shared.lora_state import LoraState
from shared.updates import ClientUpdate


def defended_aggregate(
    global_state: LoraState,
    updates: Sequence[ClientUpdate],
    factors: Mapping[str, float],
    settings: DefenseSettings,
    strategy: Strategy,
    round_index: int,
) -> AggregationResult:
    if isinstance(strategy, FedAvg):
        return gated_fedavg(global_state, updates, factors, settings)
    skipped = safety_gate(global_state, updates, factors, settings)
    if skipped is not None:
        return skipped
    kept = list(updates)
    if settings.combine == "filter":
        kept = [u for u in updates if max(factors[u.client_id], settings.min_weight) > 0]
    if not kept:
        return AggregationResult(
            dict(global_state), {u.client_id: 0.0 for u in updates}, True, "every update has weight 0"
        )
    result = strategy.aggregate(global_state, kept, round_index=round_index)
    result.client_weights = {u.client_id: result.client_weights.get(u.client_id, 0.0) for u in updates}
    weights = [max(factors[u.client_id], settings.min_weight) for u in updates]
    result.details["mean_factor"] = sum(weights) / len(weights)
    return result
