"""Aggregation strategies: one module per aggregator, one interface (`Strategy`), shared tensor helpers.

FedAvg takes the Safe-FedLLM security factors as weights; the robust baselines refuse them (as in the
official code they ignore the levels' weights) and are compared against, or combined with, the defense
levels (services.aggregator.defenses.combined). docs/aggregator.md tabulates them.
"""

from services.aggregator.strategies.base import AggregationResult, Strategy, StrategyOptions
from services.aggregator.strategies.bulyan import Bulyan, BulyanOptions
from services.aggregator.strategies.dnc import DnC, DnCOptions
from services.aggregator.strategies.fedavg import FedAvg
from services.aggregator.strategies.flame import Flame, FlameOptions
from services.aggregator.strategies.fltrust import FLTrust, FLTrustOptions
from services.aggregator.strategies.foolsgold import FoolsGold
from services.aggregator.strategies.geometric_median import GeometricMedian, GeometricMedianOptions
from services.aggregator.strategies.krum import Krum, KrumOptions, MultiKrum, MultiKrumOptions, OfficialKrum
from services.aggregator.strategies.lasa import Lasa, LasaOptions
from services.aggregator.strategies.median import Median, MedianOptions
from services.aggregator.strategies.norm_clipping import NormClipping, NormClippingOptions
from services.aggregator.strategies.registry import (
    STRATEGIES,
    make_strategy,
    options_model,
    register_strategy,
    strategy_options,
    takes_option,
    validate_options,
)
from services.aggregator.strategies.residual import ResidualBase, ResidualOptions
from services.aggregator.strategies.trimmed_mean import TrimmedMean, TrimmedMeanOptions

# Each strategy with its options model (registry.register_strategy), in the order docs and CLIs list them.
for _strategy, _options in (
    (FedAvg, StrategyOptions),
    (Median, MedianOptions),
    (TrimmedMean, TrimmedMeanOptions),
    (Krum, KrumOptions),
    (MultiKrum, MultiKrumOptions),
    (OfficialKrum, KrumOptions),
    (Bulyan, BulyanOptions),
    (FoolsGold, StrategyOptions),
    (Flame, FlameOptions),
    (DnC, DnCOptions),
    (NormClipping, NormClippingOptions),
    (GeometricMedian, GeometricMedianOptions),
    (Lasa, LasaOptions),
    (ResidualBase, ResidualOptions),
    (FLTrust, FLTrustOptions),
):
    register_strategy(_strategy, _options)


__all__ = [
    "STRATEGIES",
    "AggregationResult",
    "FedAvg",
    "Strategy",
    "StrategyOptions",
    "make_strategy",
    "options_model",
    "register_strategy",
    "strategy_options",
    "takes_option",
    "validate_options",
]
