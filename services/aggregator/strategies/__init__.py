"""Aggregation strategies: one module per aggregator, one interface (`Strategy`), shared tensor helpers.

FedAvg takes the Safe-FedLLM security factors as weights; the robust baselines refuse them (as in the
official code they ignore the levels' weights) and are compared against, or combined with, the defense
levels (services.aggregator.defenses.combined). docs/aggregator.md tabulates them.
"""

import inspect
from typing import Any

from services.aggregator.strategies.base import AggregationResult, Strategy
from services.aggregator.strategies.bulyan import Bulyan
from services.aggregator.strategies.dnc import DnC
from services.aggregator.strategies.fedavg import FedAvg
from services.aggregator.strategies.flame import Flame
from services.aggregator.strategies.fltrust import FLTrust
from services.aggregator.strategies.foolsgold import FoolsGold
from services.aggregator.strategies.geometric_median import GeometricMedian
from services.aggregator.strategies.krum import Krum, MultiKrum, OfficialKrum
from services.aggregator.strategies.lasa import Lasa
from services.aggregator.strategies.median import Median
from services.aggregator.strategies.norm_clipping import NormClipping
from services.aggregator.strategies.residual import ResidualBase
from services.aggregator.strategies.trimmed_mean import TrimmedMean

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        FedAvg,
        Median,
        TrimmedMean,
        Krum,
        MultiKrum,
        OfficialKrum,
        Bulyan,
        FoolsGold,
        Flame,
        DnC,
        NormClipping,
        GeometricMedian,
        Lasa,
        ResidualBase,
        FLTrust,
    )
}


def strategy_options(name: str) -> dict[str, inspect.Parameter]:
    """The options a strategy accepts (its constructor's keyword parameters)."""
    parameters = inspect.signature(STRATEGIES[name].__init__).parameters
    return {key: p for key, p in parameters.items() if key not in ("self", "args", "kwargs")}


def takes_option(name: str, option: str) -> bool:
    return name in STRATEGIES and option in strategy_options(name)


def make_strategy(name: str, **options: Any) -> Strategy:
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"Unknown strategy {name!r}; available: {', '.join(sorted(STRATEGIES))}") from None
    accepted = strategy_options(name)
    unknown = sorted(set(options) - set(accepted))
    missing = sorted(
        key for key, p in accepted.items() if p.default is inspect.Parameter.empty and key not in options
    )
    if unknown or missing:
        raise ValueError(
            f"{name}: unknown options {unknown}, missing required {missing}; it takes {sorted(accepted)}"
        )
    return cls(**options)


__all__ = ["STRATEGIES", "AggregationResult", "FedAvg", "Strategy", "make_strategy", "takes_option"]
