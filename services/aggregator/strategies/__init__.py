"""Aggregation strategies: one module per aggregator, one interface (`Strategy`), shared tensor helpers.

FedAvg takes the Safe-FedLLM security factors as weights; the robust baselines ignore them, as in the
official code, and are compared against the defense levels in the experiments.
"""

from typing import Any

from services.aggregator.strategies.base import AggregationResult, Strategy
from services.aggregator.strategies.bulyan import Bulyan
from services.aggregator.strategies.dnc import DnC
from services.aggregator.strategies.fedavg import FedAvg
from services.aggregator.strategies.flame import Flame
from services.aggregator.strategies.foolsgold import FoolsGold
from services.aggregator.strategies.geometric_median import GeometricMedian
from services.aggregator.strategies.krum import Krum, MultiKrum
from services.aggregator.strategies.median import Median
from services.aggregator.strategies.norm_clipping import NormClipping
from services.aggregator.strategies.trimmed_mean import TrimmedMean

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        FedAvg,
        Median,
        TrimmedMean,
        Krum,
        MultiKrum,
        Bulyan,
        FoolsGold,
        Flame,
        DnC,
        NormClipping,
        GeometricMedian,
    )
}


def make_strategy(name: str, **options: Any) -> Strategy:
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"Unknown strategy {name!r}; available: {', '.join(sorted(STRATEGIES))}") from None
    return cls(**options)


__all__ = ["STRATEGIES", "AggregationResult", "FedAvg", "Strategy", "make_strategy"]
