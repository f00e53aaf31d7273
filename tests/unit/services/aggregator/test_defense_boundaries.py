"""The defense levels at their boundaries, decided the documented way and computed by hand: p = τ flags
(every "≥"), the freeze round R_p itself is frozen, the evidence level freezes at its window's mean,
`combine="filter"` keeps what the floor s_min keeps, and the weights are n_i · max(s_i, s_min)."""

import math

import numpy as np
import pytest

from services.aggregator.defenses import (
    ClientLevel,
    DefenseSettings,
    EvidenceLevel,
    ProbeEvidence,
    ShadowLevel,
    StepLevel,
    defended_aggregate,
    gated_fedavg,
)
from services.aggregator.defenses.client_level import smooth_step
from services.aggregator.strategies import make_strategy
from shared.updates import ClientUpdate

TAU = 0.8  # DefenseSettings().threshold
CLEAN = 0.1
KEY = "m.layers.0.q.lora_B.weight"


def _evidence(step=None, shadow=None, n=160, b=16):
    return ProbeEvidence("c", n, b, step_scores=step, shadow_scores=shadow)


def _update(cid: str, value: float, n: int = 10) -> ClientUpdate:
    return ClientUpdate(cid, 0, n, {KEY: np.full((2, 2), value, np.float32)})


GLOBAL = {KEY: np.zeros((2, 2), np.float32)}


def test_a_step_scored_exactly_tau_is_flagged():
    assert DefenseSettings().threshold == TAU
    # one of ten shadow steps at τ: ρ = 16 / 160 = 0.1, s = 0.9^7; not flagging it would give 1
    shadow = ShadowLevel().decide_client(0, _evidence(shadow=[TAU] + [CLEAN] * 9), {})
    assert shadow.factor == pytest.approx(0.9**7, abs=1e-12)
    # every step at τ: m = n = 160, α = 0.95, β = 0.95 + 160
    step = StepLevel().decide_client(0, _evidence(step=[TAU] * 10), {})
    assert step.factor == pytest.approx(0.95 / 161.9, abs=1e-12)
    # a calibrated τ that is not the default, and a score one ulp below it
    level = ShadowLevel(DefenseSettings(threshold=0.37))
    assert level.decide_client(0, _evidence(shadow=[0.37] * 10), {}).factor == 0.0
    below = float(np.nextafter(0.37, 0.0))
    assert level.decide_client(0, _evidence(shadow=[below] * 10), {}).factor == 1.0


def test_the_evidence_level_records_a_last_step_at_tau_as_malicious():
    level, trust = EvidenceLevel(), {}
    for _ in range(3):
        decision = level.decide_client(0, _evidence(shadow=[CLEAN] * 9 + [TAU]), trust)
        trust = decision.trust
    assert trust["frozen"] == "malicious" and decision.factor == 0.0  # not-flagged would freeze benign


def test_an_evidence_audit_whose_last_step_is_tau_is_flagged():
    level, trust = EvidenceLevel(), {}
    for _ in range(3 + 4):  # frozen benign after 3, then 4 participations without a probe
        trust = level.decide_client(0, _evidence(shadow=[CLEAN] * 10), trust).trust
    assert level.needs_scores(0, trust)
    audit = level.decide_client(0, _evidence(shadow=[CLEAN] * 9 + [TAU]), trust)
    assert audit.factor == 0.0 and audit.trust == {"records": []} and audit.reason.startswith("audit flagged")


def test_the_evidence_level_freezes_a_benign_client_at_the_mean_of_its_window():
    # factors of three benign records (last step clean each time): ρ 0.1, 0, 0.2 -> 0.9^7, 1, 0.8^7;
    # frozen at their mean 0.562670..., not the last (0.2097), the first (0.4783) or 1.
    level, trust = EvidenceLevel(), {}
    rounds = [[0.95] + [CLEAN] * 9, [CLEAN] * 10, [0.95] * 2 + [CLEAN] * 8]
    for shadow in rounds:
        decision = level.decide_client(0, _evidence(shadow=shadow), trust)
        trust = decision.trust
    mean = (0.9**7 + 1.0 + 0.8**7) / 3
    assert trust["frozen"] == "benign" and decision.factor == pytest.approx(mean, abs=1e-12)
    assert trust["frozen_factor"] == pytest.approx(mean, abs=1e-12)
    later = level.decide_client(0, _evidence(shadow=[0.95] * 10), trust)  # not probed: the frozen factor
    assert later.factor == pytest.approx(mean, abs=1e-12) and not later.probed


def test_the_client_level_freezes_at_round_r_p_itself():
    level = ClientLevel(DefenseSettings(freeze_round=2))
    assert level.needs_scores(1, {}) and not level.needs_scores(2, {})
    first = level.decide_client(0, _evidence(step=[0.4]), {})  # u = 1 − g(0.4) ≈ 0.75
    last_probed = level.decide_client(1, _evidence(step=[1.0]), first.trust)  # round R_p − 1: still probed
    assert last_probed.probed and last_probed.trust["rounds"] == 2
    u = [1 - smooth_step(p, 0.8, 10.0) for p in (0.4, 1.0)]
    assert last_probed.factor == pytest.approx(sum(u) / 2, abs=1e-12)
    frozen = level.decide_client(2, _evidence(step=[0.0]), last_probed.trust)  # R_p: no probe, the mean
    assert not frozen.probed and frozen.reason == "frozen" and frozen.trust == last_probed.trust
    assert frozen.factor == pytest.approx(sum(u) / 2, abs=1e-12)
    assert level.decide_client(2, _evidence(), {}).factor == 1.0  # first seen after R_p: fail-open default


def test_the_step_level_still_probes_at_round_r_p_minus_one():
    level = StepLevel(DefenseSettings(freeze_round=2))
    probed = level.decide_client(1, _evidence(step=[CLEAN] * 10), {})
    assert probed.probed and probed.factor == pytest.approx(160.95 / 161.9, abs=1e-12)


def test_the_smooth_step_at_its_centre_takes_the_lower_branch():
    # g(c) = ½σ(k/2) by the documented "p ≤ c" branch; the upper branch would give ½ + ½σ(−k/2)
    assert smooth_step(0.8, 0.8, 10.0) == pytest.approx(0.5 / (1 + math.exp(-5.0)), abs=1e-15)


def test_gated_fedavg_weights_by_samples_times_the_floored_factor():
    # n = 30, 10; s = 0, 1; s_min = 0.25: weights 7.5 : 10 -> (7.5·1 + 10·4) / 17.5 = 19/7.
    # Without n_i: (0.25 + 4) / 1.25 = 3.4; without the floor: 4.
    updates = [_update("a", 1.0, n=30), _update("b", 4.0, n=10)]
    result = gated_fedavg(GLOBAL, updates, {"a": 0.0, "b": 1.0}, DefenseSettings(min_weight=0.25))
    np.testing.assert_allclose(result.state[KEY], 19 / 7, rtol=1e-6)
    assert result.client_weights == pytest.approx({"a": 3 / 7, "b": 4 / 7})
    assert result.details["mean_factor"] == 0.625


def test_filter_keeps_a_zero_factor_update_that_the_floor_s_min_lifts():
    # filter withholds updates whose weight max(s_i, s_min) is 0; with s_min = 0.25 none is 0, so the
    # median sees all three (2.0), as it does without s_min only the first two (1.5)
    updates = [_update("a", 1.0), _update("b", 2.0), _update("c", 9.0)]
    factors = {"a": 1.0, "b": 1.0, "c": 0.0}
    median = make_strategy("median")
    floored = DefenseSettings(aggregator="median", combine="filter", min_weight=0.25)
    result = defended_aggregate(GLOBAL, updates, factors, floored, median, 0)
    np.testing.assert_array_equal(result.state[KEY], 2.0)
    assert result.client_weights == {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}
    assert result.details["mean_factor"] == pytest.approx(2.25 / 3)
    unfloored = DefenseSettings(aggregator="median", combine="filter")
    np.testing.assert_array_equal(
        defended_aggregate(GLOBAL, updates, factors, unfloored, median, 0).state[KEY], 1.5
    )
