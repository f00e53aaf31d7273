"""Every robust baseline, on a planted attack, must move the aggregate towards the benign clients.

Five benign clients send noisy copies of one update; two sybil attackers send the same update,
three times as large, in an orthogonal direction. FedAvg follows the attackers part of the way; each
defense must end closer to the benign mean than FedAvg and carry less than half its attack component.
"""

import numpy as np
import pytest

from services.aggregator.strategies import STRATEGIES, make_strategy
from services.aggregator.strategies.tensors import FlatLayout
from shared.updates import ClientUpdate

KEYS = ("m.layers.0.q.lora_A.weight", "m.layers.0.q.lora_B.weight")
SHAPES = ((2, 16), (16, 2))
LAYOUT = FlatLayout(KEYS, SHAPES)
DIM = 64


def _scenario(seed: int = 0):
    rng = np.random.default_rng(seed)
    global_vec = rng.normal(size=DIM)
    benign_dir = rng.normal(size=DIM)
    attack_dir = rng.normal(size=DIM)
    attack_dir -= attack_dir @ benign_dir / (benign_dir @ benign_dir) * benign_dir
    attack_dir /= np.linalg.norm(attack_dir)
    deltas = [benign_dir + 0.3 * rng.normal(size=DIM) for _ in range(5)]
    deltas += [24 * attack_dir] * 2
    updates = [ClientUpdate(f"c{i}", 0, 16, LAYOUT.unflatten(global_vec + d)) for i, d in enumerate(deltas)]
    return LAYOUT.unflatten(global_vec), updates, global_vec, np.mean(deltas[:5], axis=0), attack_dir


ROBUST = sorted(set(STRATEGIES) - {"fedavg", "fltrust"})  # FLTrust needs a root-set trainer
OPTIONS = {"krum": {"num_attackers": 2}, "multi_krum": {"num_attackers": 2}, "bulyan": {"num_attackers": 1}}
OPTIONS |= {"dnc": {"num_attackers": 2}, "flame": {"noise_factor": 0.0, "cluster_on": "updates"}}
OPTIONS |= {"trimmed_mean": {"trim": 2}, "krum_official": {"num_attackers": 2}}


@pytest.mark.parametrize("name", ROBUST)
def test_defense_moves_the_aggregate_towards_the_benign_clients(name):
    global_state, updates, global_vec, benign_mean, attack_dir = _scenario()
    fedavg = LAYOUT.flatten(make_strategy("fedavg").aggregate(global_state, updates).state) - global_vec
    result = make_strategy(name, **OPTIONS.get(name, {})).aggregate(global_state, updates, round_index=0)
    defended = LAYOUT.flatten(result.state) - global_vec
    assert np.linalg.norm(defended - benign_mean) < np.linalg.norm(fedavg - benign_mean), name
    assert abs(defended @ attack_dir) < 0.5 * abs(fedavg @ attack_dir), name
    assert set(result.client_weights) == {u.client_id for u in updates}


@pytest.mark.parametrize("name", ["krum", "multi_krum", "dnc", "flame", "foolsgold"])
def test_selecting_defenses_give_the_attackers_no_weight(name):
    global_state, updates, *_ = _scenario()
    result = make_strategy(name, **OPTIONS.get(name, {})).aggregate(global_state, updates, round_index=0)
    assert result.client_weights["c5"] == result.client_weights["c6"] == 0.0, result.client_weights


def test_without_an_attack_robust_means_stay_near_fedavg():
    global_state, updates, global_vec, benign_mean, _ = _scenario()
    benign_only = updates[:5]
    for name in ("median", "trimmed_mean", "geometric_median", "multi_krum"):
        strategy = make_strategy(name, **OPTIONS.get(name, {}))
        agg = LAYOUT.flatten(strategy.aggregate(global_state, benign_only).state) - global_vec
        assert np.linalg.norm(agg - benign_mean) < 0.3 * np.linalg.norm(benign_mean), name


def test_unknown_strategy_names_the_available_ones():
    with pytest.raises(ValueError, match=r"available: .*krum"):
        make_strategy("nope")
