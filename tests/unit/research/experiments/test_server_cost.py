"""E5's server-cost pieces: chunked FedAvg is FedAvg, synthetic rounds, the stop rule's inputs."""

import numpy as np
import pytest

from research.experiments.e5_overhead import checks, scaling_exponent, summarise
from research.experiments.server_cost import (
    attackers,
    baseline_cost,
    baseline_peak_bytes,
    chunked_fedavg,
    probe_level_cost,
    synthetic_round,
)
from services.aggregator.defenses import DefenseSettings
from services.aggregator.strategies import FedAvg
from shared.features import FeatureSpec

SHAPES = {
    "m.layers.0.q.lora_A.weight": (2, 6),
    "m.layers.0.q.lora_B.weight": (6, 2),
    "m.layers.1.q.lora_A.weight": (2, 6),
    "m.layers.1.q.lora_B.weight": (6, 2),
}
SPEC = FeatureSpec(keys=("m.layers.0.q.lora_B.weight",), shapes=((6, 2),))


def round_of(n: int, share: float = 0.3):
    direction = np.arange(1, SPEC.dim + 1, dtype=np.float32)
    return synthetic_round(
        SHAPES, SPEC, direction, n, steps=3, batch_size=2, malicious_share=share, pool_size=4
    )


def test_chunked_fedavg_equals_one_fedavg_call():
    r = round_of(23)
    weights = list(np.linspace(0.0, 1.0, 23))
    whole = FedAvg().aggregate(r.global_state, r.updates, weights).state
    for chunk in (1, 5, 23, 100):
        chunked = chunked_fedavg(r.global_state, r.updates, weights, chunk)
        for key in whole:
            np.testing.assert_allclose(chunked[key], whole[key], rtol=1e-5, atol=1e-8)


def test_synthetic_round_shapes_and_malicious_direction():
    r = round_of(50, share=0.5)
    assert len(r.updates) == 50 and 10 < r.malicious.sum() < 40
    u = r.updates[0]
    assert u.b_snapshots.shape == (3, SPEC.dim) and u.shadow_snapshots.shape == (3, SPEC.dim)
    assert {k: v.shape for k, v in u.lora_state.items()} == SHAPES
    direction = np.arange(1, SPEC.dim + 1)
    along = np.asarray([u.b_snapshots[-1] @ direction for u in r.updates])
    assert (along[r.malicious] > 0).all() and (along[~r.malicious] < 0).all()


def test_a_probe_level_flags_what_the_probe_scores_high():
    """A scorer that reads the planted direction: malicious updates get factor < 1, benign ones keep 1."""
    r = round_of(40)
    direction = np.arange(1, SPEC.dim + 1, dtype=np.float32)

    def scorer(x: np.ndarray) -> np.ndarray:
        return (x @ direction > 0).astype(np.float32)

    cost = probe_level_cost("shadow", r, SPEC, scorer, DefenseSettings(threshold=0.5), chunk=7)
    assert cost.flagged_malicious == int(r.malicious.sum()) and cost.flagged_benign == 0
    assert cost.seconds >= 0 and cost.cpu_seconds >= 0 and not cost.skipped


def test_baselines_run_and_memory_estimate_grows_quadratically_in_the_matrix():
    r = round_of(12)
    seconds, cpu, result = baseline_cost("krum", r, attackers("krum", 12, 0.3))
    assert seconds >= 0 and cpu >= 0 and sum(w > 0 for w in result.client_weights.values()) == 1
    assert attackers("krum", 12, 0.3) == {"num_attackers": 4} and attackers("flame", 12, 0.3) == {}
    assert baseline_peak_bytes("flame", 10, 100) == 4 * 10 * 100 * 8 + 3 * 100 * 8
    assert baseline_peak_bytes("krum", 10, 100) == 2 * 10 * 100 * 8 + 3 * 100 * 8


def test_scaling_exponent_summary_and_checks():
    rows = [
        {"method": "step", "status": "ran", "clients": 10, "seconds": 1, "cpu_seconds": 1.0},
        {"method": "step", "status": "ran", "clients": 1000, "seconds": 100, "cpu_seconds": 100.0},
        {"method": "krum", "status": "ran", "clients": 10, "seconds": 1, "cpu_seconds": 1.0},
        {"method": "krum", "status": "ran", "clients": 100, "seconds": 100, "cpu_seconds": 100.0},
        {"method": "krum", "status": "not run", "clients": 1000, "reason": "memory"},
    ]
    assert scaling_exponent(rows[:2]) == pytest.approx(1.0)
    assert scaling_exponent(rows[2:]) == pytest.approx(2.0)
    summary = summarise(rows, ("step",), 1000)
    assert summary["step"]["target_60s_met"] is False and summary["krum"]["largest_size_run"] == 100
    assert checks(rows) == {"step: cost grows with clients": True, "krum: cost grows with clients": True}
