"""The Safe-FedLLM levels against values computed by hand from the method (reference/method.md §3)."""

import numpy as np
import pytest

from services.aggregator.defenses import (
    ClientLevel,
    DefenseSettings,
    EvidenceLevel,
    ProbeEvidence,
    ShadowLevel,
    StepLevel,
    gated_fedavg,
    make_defense,
)
from services.aggregator.defenses.client_level import smooth_step
from shared.updates import ClientUpdate

FLAGGED, CLEAN = 0.95, 0.1


def _evidence(step=None, shadow=None, n=160, b=16, cid="c"):
    return ProbeEvidence(cid, n, b, step_scores=step, shadow_scores=shadow)


def test_step_level_beta_trust_matches_the_method_examples():
    level = StepLevel()
    bad = level.decide_client(0, _evidence(step=[FLAGGED] * 10), {})
    assert bad.factor == pytest.approx(0.95 / 161.9, abs=1e-6)  # ≈ 0.006
    assert bad.trust == pytest.approx({"alpha": 0.95, "beta": 160.95})
    good = level.decide_client(0, _evidence(step=[CLEAN] * 10), {})
    assert good.factor == pytest.approx(160.95 / 161.9, abs=1e-6)  # ≈ 0.994
    # 3 of 10 steps flagged: m = 48 of 160, then forgetting with gamma 0.95 on the next round
    mixed = level.decide_client(0, _evidence(step=[FLAGGED] * 3 + [CLEAN] * 7), {})
    assert mixed.trust == pytest.approx({"alpha": 0.95 + 112, "beta": 0.95 + 48})
    nxt = level.decide_client(1, _evidence(step=[CLEAN] * 10), mixed.trust)
    alpha, beta = 0.95 * 112.95 + 160, 0.95 * 48.95
    assert nxt.factor == pytest.approx(alpha / (alpha + beta))


def test_step_level_freezes_at_the_freeze_round():
    level = StepLevel(DefenseSettings(freeze_round=2))
    trust = {"alpha": 3.0, "beta": 1.0}
    frozen = level.decide_client(2, _evidence(step=[FLAGGED] * 10), trust)
    assert frozen.factor == 0.75 and not frozen.probed and frozen.trust == trust
    assert level.decide_client(5, _evidence(), {}).factor == 0.5  # first seen after the freeze: prior mean
    assert not level.needs_scores(2, trust) and level.needs_scores(1, trust)


@pytest.mark.parametrize(("p", "u"), [(0.0, 0.997), (0.4, 0.75), (0.8, 0.503), (0.9, 0.25), (1.0, 0.003)])
def test_client_level_smooth_step_matches_the_method_table(p, u):
    assert 1 - smooth_step(p, 0.8, 10.0) == pytest.approx(u, abs=1e-3)


def test_client_level_is_a_running_mean_of_u_over_sampled_rounds():
    level = ClientLevel()
    first = level.decide_client(0, _evidence(step=[0.1, 0.2, 0.4]), {})  # last step: p = 0.4 -> 0.75
    second = level.decide_client(3, _evidence(step=[0.0, 0.9]), first.trust)  # p = 0.9 -> 0.25
    assert first.factor == pytest.approx(0.75, abs=1e-3)
    assert second.factor == pytest.approx(0.5, abs=1e-3)
    assert second.trust["rounds"] == 2


@pytest.mark.parametrize(("flagged", "factor"), [(1, 0.478), (2, 0.210), (3, 0.082), (5, 0.0078)])
def test_shadow_level_power_seven(flagged, factor):
    scores = [FLAGGED] * flagged + [CLEAN] * (10 - flagged)
    decision = ShadowLevel().decide_client(4, _evidence(shadow=scores), {})
    assert decision.factor == pytest.approx(factor, abs=1e-3)  # rho = flagged * 16 / 160


def test_missing_scores_follow_the_failure_policy():
    missing = _evidence()
    closed, open_, method = (
        DefenseSettings(on_probe_unavailable=p) for p in ("fail_closed", "fail_open", "method")
    )
    assert ShadowLevel(closed).decide_client(0, missing, {}).factor == 0.0
    assert ShadowLevel(open_).decide_client(0, missing, {}).factor == 1.0
    assert ShadowLevel(method).decide_client(0, missing, {}).factor == 1.0  # official: benign
    assert ClientLevel(method).decide_client(0, missing, {}).factor == pytest.approx(0.003, abs=1e-3)  # p = 1
    assert "probe unavailable" in StepLevel(closed).decide_client(0, missing, {}).reason


def _participate(level, trust, scores):
    decision = level.decide_client(0, _evidence(shadow=scores), trust)
    return decision, decision.trust


def test_evidence_level_audits_at_the_fifth_participation_after_freezing():
    """Default settings (reprobe_interval 5), counted from the freeze as in the official code, not every
    5th participation overall: frozen at participation 3, the audits fall on participations 8 and 13."""
    level = EvidenceLevel()
    assert level.settings.reprobe_interval == 5
    clean, bad = [CLEAN] * 10, [FLAGGED] * 10
    trust: dict = {}
    for _ in range(3):
        decision, trust = _participate(level, trust, clean)
    assert trust["frozen"] == "benign" and decision.factor == 1.0
    needs = []
    for _ in range(10):  # participations 4..13, all with clean shadow scores when probed
        needs.append(level.needs_scores(0, trust) and level.needs_shadow(0, trust))
        decision, trust = _participate(level, trust, clean)
    assert needs == [False, False, False, False, True, False, False, False, False, True]
    assert decision.reason.startswith("audit passed") and trust["since_frozen"] == 0
    # between audits the shadow scores are not even looked at: the frozen factor stands
    decision, trust = _participate(level, trust, bad)
    assert decision.reason == "frozen benign" and decision.factor == 1.0 and not decision.probed


def test_evidence_level_flagged_audit_unfreezes_and_restarts_the_evidence():
    level = EvidenceLevel()
    clean, bad = [CLEAN] * 10, [FLAGGED] * 10
    trust: dict = {}
    for _ in range(3 + 4):
        _, trust = _participate(level, trust, clean)
    audit, trust = _participate(level, trust, bad)
    assert audit.factor == 0.0 and "audit flagged" in audit.reason and trust == {"records": []}
    # disagreement resets; three malicious records freeze at 0 for good, with no shadow branch any more
    for scores in (bad, clean, bad):
        _, trust = _participate(level, trust, scores)
    assert trust["records"] == [] and "frozen" not in trust
    for _ in range(3):
        _, trust = _participate(level, trust, bad)
    assert trust["frozen"] == "malicious" and not level.needs_shadow(0, trust)
    assert level.decide_client(0, _evidence(shadow=clean), trust).factor == 0.0


def test_only_shadow_levels_ask_for_a_shadow_branch():
    assert ShadowLevel().needs_shadow(30, {}) and EvidenceLevel().needs_shadow(0, {})
    assert not StepLevel().needs_shadow(0, {}) and not ClientLevel().needs_shadow(0, {})


KEY = "m.layers.0.q.lora_B.weight"


def _update(cid: str, value: float) -> ClientUpdate:
    return ClientUpdate(cid, 0, 10, {KEY: np.full((2, 2), value, np.float32)})


def test_gate_skips_low_trust_rounds_and_weights_the_rest():
    settings = DefenseSettings()
    global_state = {KEY: np.zeros((2, 2), np.float32)}
    updates = [_update("good", 1.0), _update("bad", 9.0)]
    skipped = gated_fedavg(global_state, updates, {"good": 0.3, "bad": 0.05}, settings)
    assert skipped.skipped and "mean factor 0.175 < 0.2" in skipped.reason
    np.testing.assert_array_equal(skipped.state[KEY], 0.0)
    kept = gated_fedavg(global_state, updates, {"good": 0.9, "bad": 0.1}, settings)
    np.testing.assert_allclose(kept.state[KEY], (0.9 * 1 + 0.1 * 9) / 1.0)
    assert kept.client_weights == pytest.approx({"good": 0.9, "bad": 0.1})


def test_gate_boundary_is_strict():
    global_state = {KEY: np.zeros((2, 2), np.float32)}
    updates = [_update("a", 1.0), _update("b", 3.0)]
    at = gated_fedavg(global_state, updates, {"a": 0.25, "b": 0.15}, DefenseSettings())  # mean = κ exactly
    assert not at.skipped
    np.testing.assert_allclose(at.state[KEY], (0.25 * 1 + 0.15 * 3) / 0.4)


def test_gate_and_weights_use_the_floored_factors_as_the_official_code():
    """max(s_i, s_min) first, then the mean (official `compute`); method.md's mean of raw s_i would skip."""
    global_state = {KEY: np.zeros((2, 2), np.float32)}
    updates = [_update("a", 1.0), _update("b", 5.0)]
    result = gated_fedavg(global_state, updates, {"a": 0.1, "b": 0.0}, DefenseSettings(min_weight=0.25))
    assert not result.skipped  # floored mean 0.25 >= 0.2; the raw mean 0.05 would skip
    np.testing.assert_allclose(result.state[KEY], (0.25 * 1 + 0.25 * 5) / 0.5)  # weights 0.25 each
    assert result.details["mean_factor"] == 0.25


def test_a_level_combined_with_a_robust_rule_gates_then_filters_on_request():
    from services.aggregator.defenses import defended_aggregate
    from services.aggregator.strategies import make_strategy

    global_state = {KEY: np.zeros((2, 2), np.float32)}
    updates = [_update("a", 1.0), _update("b", 2.0), _update("c", 9.0)]
    factors = {"a": 1.0, "b": 1.0, "c": 0.0}
    median = make_strategy("median")
    gate = defended_aggregate(global_state, updates, factors, DefenseSettings(aggregator="median"), median, 0)
    np.testing.assert_array_equal(gate.state[KEY], 2.0)  # the official pairing: median of all three
    filtered = defended_aggregate(
        global_state, updates, factors, DefenseSettings(aggregator="median", combine="filter"), median, 0
    )
    np.testing.assert_array_equal(filtered.state[KEY], 1.5)  # c (weight 0) withheld: median of 1 and 2
    assert filtered.client_weights["c"] == 0.0
    low = {"a": 0.1, "b": 0.1, "c": 0.0}
    assert defended_aggregate(global_state, updates, low, DefenseSettings(), median, 0).skipped
    with pytest.raises(ValueError, match="unknown aggregator"):
        DefenseSettings(aggregator="nope")


def test_decide_runs_every_client_and_make_defense_knows_the_levels():
    decision = make_defense("shadow").decide(
        0, [_evidence(shadow=[CLEAN], cid="a"), _evidence(shadow=[FLAGGED] * 10, cid="b")], {}
    )
    assert decision.factors["a"] == 1.0 and decision.factors["b"] == 0.0
    with pytest.raises(ValueError, match="available"):
        make_defense("nope")
