"""Security-weighted FedAvg with the safety gate: the aggregation every defense level shares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.aggregator.defenses.base import DefenseSettings
from services.aggregator.strategies import AggregationResult, FedAvg
from shared.lora_state import LoraState
from shared.updates import ClientUpdate


def gated_fedavg(
    global_state: LoraState,
    updates: Sequence[ClientUpdate],
    factors: Mapping[str, float],
    settings: DefenseSettings,
) -> AggregationResult:
    """Skip the round (global unchanged) if mean factor < κ; else FedAvg with n_i · max(s_i, s_min)."""
    values = [factors[u.client_id] for u in updates]
    mean = sum(values) / len(values) if values else 0.0
    if mean < settings.skip_below:
        return AggregationResult(
            dict(global_state),
            {u.client_id: 0.0 for u in updates},
            skipped=True,
            reason=f"safety gate: mean factor {mean:.3f} < {settings.skip_below}",
        )
    weights = [max(v, settings.min_weight) for v in values]
    result = FedAvg().aggregate(global_state, updates, weights)
    result.details["mean_factor"] = mean
    return result
