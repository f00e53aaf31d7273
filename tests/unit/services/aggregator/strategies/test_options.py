"""No strategy silently ignores what it is given: every option changes the result on some input, unknown
or missing options are refused, and rules that do not weight by security factors refuse factors."""

import numpy as np
import pytest

from services.aggregator.strategies import STRATEGIES, make_strategy, strategy_options
from services.aggregator.strategies.tensors import FlatLayout
from shared.updates import ClientUpdate

LAYOUT = FlatLayout(("a.lora_A.weight", "a.lora_B.weight"), ((2, 6), (6, 2)))


def _server(shift):
    return lambda state, r: {k: v + np.float32(shift) for k, v in state.items()}


REQUIRED = {"num_attackers": 1, "server_update": _server(0.1)}
# option -> a value other than its default (or, for required ones, other than REQUIRED), and the other
# options both runs share where the default ones would hide the option (e.g. DnC sampling every coordinate)
ALTERNATIVES = {
    ("median", "even"): "lower",
    ("trimmed_mean", "trim"): 0,
    ("krum", "num_attackers"): 5,
    ("multi_krum", "num_attackers"): 3,
    ("multi_krum", "num_selected"): 2,
    ("krum_official", "num_attackers"): 4,
    ("bulyan", "num_attackers"): 0,
    ("flame", "noise_factor"): 0.5,
    ("flame", "seed"): 7,
    ("flame", "cluster_on"): "updates",
    ("flame", "clustering"): ("official", {"cluster_on": "updates"}),
    ("dnc", "num_attackers"): 3,
    ("dnc", "subsample"): (1, {"num_attackers": 3}),
    ("dnc", "iterations"): (5, {"subsample": 2}),
    ("dnc", "filter_fraction"): 3.0,
    ("dnc", "seed"): (7, {"subsample": 1, "num_attackers": 3}),
    ("norm_clipping", "bound"): 0.01,
    ("geometric_median", "iterations"): 1,
    ("lasa", "sparsity"): 0.0,
    ("lasa", "lambda_n"): 0.1,
    ("lasa", "lambda_s"): 0.01,
    ("residual", "lam"): 0.01,
    ("residual", "thresh"): 0.9,
    ("fltrust", "server_update"): _server(-0.1),
}


def _scenario():
    rng = np.random.default_rng(5)
    base = rng.normal(size=LAYOUT_DIM)
    deltas = rng.normal(size=(8, LAYOUT_DIM)) * rng.uniform(0.2, 3.0, size=(8, 1))
    deltas[5:] += 4.0  # three clients pull together elsewhere
    updates = [ClientUpdate(f"c{i}", 0, 10 + i, LAYOUT.unflatten(base + d)) for i, d in enumerate(deltas)]
    return LAYOUT.unflatten(base), updates


LAYOUT_DIM = 24


def _run(name, **options):
    global_state, updates = _scenario()
    base = {k: v for k, v in REQUIRED.items() if k in strategy_options(name)}
    return LAYOUT.flatten(
        make_strategy(name, **(base | options)).aggregate(global_state, updates, round_index=3).state
    )


def test_every_option_of_every_strategy_has_a_case_here():
    declared = {(name, option) for name in STRATEGIES for option in strategy_options(name)}
    assert declared == set(ALTERNATIVES)


@pytest.mark.parametrize(("name", "option"), sorted(ALTERNATIVES))
def test_changing_an_option_changes_the_result(name, option):
    value = ALTERNATIVES[name, option]
    value, shared = value if isinstance(value, tuple) else (value, {})
    assert not np.allclose(_run(name, **shared), _run(name, **shared, **{option: value})), (name, option)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_unknown_options_are_refused(name):
    with pytest.raises(ValueError, match="unknown options \\['bogus'\\]"):
        make_strategy(name, bogus=1, **{k: v for k, v in REQUIRED.items() if k in strategy_options(name)})


@pytest.mark.parametrize("name", sorted(set(STRATEGIES) - {"fedavg"}))
def test_rules_without_factor_weighting_refuse_factors(name):
    global_state, updates = _scenario()
    strategy = make_strategy(name, **{k: v for k, v in REQUIRED.items() if k in strategy_options(name)})
    with pytest.raises(ValueError, match="security factors"):
        strategy.aggregate(global_state, updates, [1.0] * len(updates), round_index=0)


@pytest.mark.parametrize("name", ["dnc", "flame"])
def test_randomised_rules_need_the_round(name):
    global_state, updates = _scenario()
    with pytest.raises(ValueError, match="round_index"):
        make_strategy(name, **{k: v for k, v in REQUIRED.items() if k in strategy_options(name)}).aggregate(
            global_state, updates
        )
