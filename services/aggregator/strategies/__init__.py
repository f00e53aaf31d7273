"""Aggregation strategies: one module per aggregator, one interface (`Strategy`), shared tensor helpers."""

from services.aggregator.strategies.base import AggregationResult, Strategy
from services.aggregator.strategies.fedavg import FedAvg

STRATEGIES: dict[str, type[Strategy]] = {"fedavg": FedAvg}


def make_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ValueError(f"Unknown strategy {name!r}; available: {', '.join(sorted(STRATEGIES))}") from None


__all__ = ["STRATEGIES", "AggregationResult", "FedAvg", "Strategy", "make_strategy"]
