"""Security-weighted FedAvg with the safety gate: the aggregation every defense level shares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.aggregator.defenses.base import DefenseSettings
from services.aggregator.strategies import AggregationResult, FedAvg
from shared.lora_state import LoraState
from shared.updates import ClientUpdate


def safety_gate(
    global_state: LoraState,
    updates: Sequence[ClientUpdate],
    factors: Mapping[str, float],
    settings: DefenseSettings,
) -> AggregationResult | None:
    """The skipped round (global unchanged) if the mean of max(s_i, s_min) is below κ, else None.

    The floor comes first, as in the official code (`compute` floors each factor, then averages);
    method.md writes the mean of s_i, which differs only when s_min > 0."""
    values = [max(factors[u.client_id], settings.min_weight) for u in updates]
    mean = sum(values) / len(values) if values else 0.0
    if mean >= settings.skip_below:
        return None
    return AggregationResult.skip(
        global_state, updates, f"safety gate: mean factor {mean:.3f} < {settings.skip_below}"
    )


def gated_fedavg(
    global_state: LoraState,
    updates: Sequence[ClientUpdate],
    factors: Mapping[str, float],
    settings: DefenseSettings,
) -> AggregationResult:
    """Skip the round (global unchanged) if mean factor < κ; else FedAvg with n_i · max(s_i, s_min)."""
    skipped = safety_gate(global_state, updates, factors, settings)
    if skipped is not None:
        return skipped
    weights = [max(factors[u.client_id], settings.min_weight) for u in updates]
    result = FedAvg().aggregate(global_state, updates, weights)
    result.details["mean_factor"] = sum(weights) / len(weights)
    return result
