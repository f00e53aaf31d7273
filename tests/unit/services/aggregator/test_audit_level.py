"""The audit levels: threshold, failure policy and the trust combination, pinned by hand; then a round
through the AggregatorService with an in-process auditor (pure logic, no model)."""

from collections.abc import Sequence

import numpy as np
import pytest

from research.orchestrator import RoundOrchestrator
from services.aggregator.auditing import AggregatorAudit
from services.aggregator.defenses import AuditEvidence, AuditLevelSettings, DefenseSettings, make_defense
from services.aggregator.defenses.audit_level import (
    AuditClientLevel,
    AuditEvidenceLevel,
    AuditLevel,
    AuditShadowLevel,
    AuditStepLevel,
)
from services.aggregator.defenses.client_level import ClientLevel
from services.aggregator.service import AggregatorService
from services.aggregator.settings import AggregatorSettings, FederationConfig
from services.aggregator.state import InMemoryStateStore, RoundPhase
from shared.updates import ClientUpdate

ONE_FLAGGED = [0.9, 0.1, 0.1, 0.1, 0.1]  # n = 20, b = 4: rho = 4 / 20 = 0.2
SHADOW_ONE_FLAGGED = 0.8**7  # (1 - rho)^eta = 0.2097152


def _evidence(audit=None, step=None, shadow=None, n=20, b=4):
    return AuditEvidence("c", n, b, step_scores=step, shadow_scores=shadow, audit_score=audit)


def _audit(**values) -> AuditLevelSettings:
    return AuditLevelSettings(**{"threshold": 0.1, "flagged_factor": 0.0, **values})


def test_audit_level_flags_at_the_threshold_inclusive():
    level = AuditLevel(audit=_audit())
    assert level.decide_client(0, _evidence(0.1), {}).factor == 0.0
    assert level.decide_client(0, _evidence(0.0999), {}).factor == 1.0
    assert level.decide_client(0, _evidence(-0.3), {}).factor == 1.0
    soft = AuditLevel(audit=_audit(flagged_factor=0.25)).decide_client(0, _evidence(0.2), {})
    assert soft.factor == 0.25 and soft.reason == "audit Δ=0.200 flagged" and soft.trust == {}
    assert not level.needs_scores(0, {}) and not level.needs_shadow(0, {})  # no probe, no shadow branch


@pytest.mark.parametrize(("policy", "factor"), [("fail_closed", 0.25), ("fail_open", 1.0), ("method", 1.0)])
def test_a_missing_audit_follows_the_failure_policy(policy, factor):
    level = AuditLevel(DefenseSettings(on_probe_unavailable=policy), _audit(flagged_factor=0.25))
    decision = level.decide_client(0, _evidence(None), {})
    assert decision.factor == factor and decision.reason.startswith("audit unavailable")


@pytest.mark.parametrize(
    ("combination", "shadow", "audit", "flagged_factor", "factor"),
    [
        ("min", ONE_FLAGGED, 0.05, 0.5, SHADOW_ONE_FLAGGED),  # clean audit: the probe level's factor
        ("product", ONE_FLAGGED, 0.05, 0.5, SHADOW_ONE_FLAGGED),
        ("min", ONE_FLAGGED, 0.5, 0.5, SHADOW_ONE_FLAGGED),  # both flag: min keeps the lower one
        ("product", ONE_FLAGGED, 0.5, 0.5, SHADOW_ONE_FLAGGED * 0.5),  # product compounds: 0.1048576
        ("min", [0.1] * 5, 0.5, 0.5, 0.5),  # only the audit flags: capped at flagged_factor
        ("product", [0.1] * 5, 0.5, 0.5, 0.5),
        ("min", [0.1] * 5, 0.5, 0.0, 0.0),
    ],
)
def test_audit_shadow_combines_the_factors(combination, shadow, audit, flagged_factor, factor):
    level = AuditShadowLevel(audit=_audit(flagged_factor=flagged_factor, trust_combination=combination))
    decision = level.decide_client(0, _evidence(audit, shadow=shadow), {})
    assert decision.factor == pytest.approx(factor, abs=1e-12)
    assert decision.reason.startswith("rho=") and "audit Δ=" in decision.reason


def test_audit_step_keeps_the_step_levels_beta_trust_under_probe():
    level = AuditStepLevel(audit=_audit())
    first = level.decide_client(0, _evidence(0.0, step=ONE_FLAGGED), {})
    assert first.trust == {"probe": pytest.approx({"alpha": 0.95 + 16, "beta": 0.95 + 4})}
    assert first.factor == pytest.approx(16.95 / 21.9)
    second = level.decide_client(1, _evidence(0.0, step=[0.1] * 5), first.trust)
    alpha, beta = 0.95 * 16.95 + 20, 0.95 * 4.95
    assert second.factor == pytest.approx(alpha / (alpha + beta))
    # frozen from R_p on: the probe is no longer asked, the audit still decides
    frozen_round = level.settings.freeze_round
    assert not level.needs_scores(frozen_round, second.trust)
    late = level.decide_client(frozen_round, _evidence(0.3), second.trust)
    assert late.factor == 0.0 and not late.probed and late.trust == second.trust


def test_audit_evidence_follows_the_evidence_levels_shadow_schedule_and_zeroes_a_flagged_audit():
    level = AuditEvidenceLevel(audit=_audit())
    trust = {"probe": {"frozen": "benign", "frozen_factor": 0.9, "participations": 1, "records": []}}
    assert not level.needs_shadow(0, trust) and not level.needs_scores(0, trust)
    clean = level.decide_client(0, _evidence(0.0), trust)
    assert clean.factor == 0.9 and clean.reason == "frozen benign; audit Δ=0.000"
    assert level.decide_client(0, _evidence(0.2), trust).factor == 0.0


def test_every_combination_is_registered_with_its_probe_level(monkeypatch):
    monkeypatch.setenv("SAFE_FEDLLM_AUDIT_LEVEL_THRESHOLD", "0.3")
    level = make_defense("audit+client")
    assert isinstance(level, AuditClientLevel) and isinstance(level.probe, ClientLevel)
    assert level.audit.threshold == 0.3 and level.inputs == "steps"
    assert {make_defense(n).name for n in ("audit", "audit+step", "audit+shadow", "audit+evidence")} == {
        "audit",
        "audit+step",
        "audit+shadow",
        "audit+evidence",
    }


# --- through the service ---------------------------------------------------------------------------------

KEY = "layers.0.v_proj.lora_B.weight"


class ShiftPool:
    def __init__(self, shifts: dict[str, float]) -> None:
        self.shifts = shifts

    @property
    def client_ids(self) -> list[str]:
        return list(self.shifts)

    def train_round(self, client_ids: Sequence[str], global_state, round_index, lr, shadow=None):
        return [
            ClientUpdate(c, round_index, 10, {KEY: global_state[KEY] + self.shifts[c]}, batch_size=4)
            for c in client_ids
        ]


class ShiftAuditor:
    """Δ = how far the update moved the adapter (a stand-in for the canary measurement)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.calls = fail, 0

    async def audit(self, base_model: str, adapter, reference) -> float:
        self.calls += 1
        if self.fail:
            raise ConnectionError("audit service down")
        return float(np.mean(adapter[KEY] - reference[KEY]))


def _run(monkeypatch, auditor, policy="fail_closed"):
    monkeypatch.setenv("SAFE_FEDLLM_AUDIT_LEVEL_SCORING__BACKOFF_S", "0")
    store = InMemoryStateStore()
    settings = AggregatorSettings(
        defense="audit",
        defense_settings=DefenseSettings(on_probe_unavailable=policy),
        federation=FederationConfig(num_rounds=1, clients_per_round=2),
    )
    service = AggregatorService(
        store, settings, {KEY: np.zeros((3, 2), np.float32)}, population=["a", "b"], auditor=auditor
    )
    [summary] = RoundOrchestrator(service, ShiftPool({"a": 0.05, "b": 1.0})).run(progress=False)
    return summary, store


def test_the_service_audits_every_update_and_drops_the_flagged_one(monkeypatch):
    auditor = ShiftAuditor()
    summary, store = _run(monkeypatch, auditor)
    assert summary.phase is RoundPhase.AGGREGATED and auditor.calls == 2
    assert summary.factors == {"a": 1.0, "b": 0.0}
    assert summary.scores == pytest.approx({"a": 0.05, "b": 1.0})  # the audit level's score is Δ
    np.testing.assert_allclose(store.get_global()[1][KEY], 0.05, rtol=1e-6)  # b's update has weight 0
    assert sorted(v.audit for v in store.get_scores(0).values()) == pytest.approx([0.05, 1.0])


def test_an_unreachable_audit_service_follows_the_failure_policy(monkeypatch):
    auditor = ShiftAuditor(fail=True)
    closed, store = _run(monkeypatch, auditor)
    assert auditor.calls == 4  # two updates, two attempts each (AuditLevelSettings.scoring)
    assert closed.phase is RoundPhase.SKIPPED and closed.factors == {"a": 0.0, "b": 0.0}
    assert all(str(v.audit_error).startswith("ConnectionError") for v in store.get_scores(0).values())
    opened, store = _run(monkeypatch, ShiftAuditor(fail=True), policy="fail_open")
    assert opened.phase is RoundPhase.AGGREGATED and opened.factors == {"a": 1.0, "b": 1.0}
    np.testing.assert_allclose(store.get_global()[1][KEY], (0.05 + 1.0) / 2, rtol=1e-6)


def test_an_audit_level_without_an_auditor_is_refused():
    settings = AggregatorSettings(defense="audit")
    with pytest.raises(ValueError, match="needs an auditor"):
        AggregatorService(
            InMemoryStateStore(), settings, {KEY: np.zeros((3, 2), np.float32)}, population=["a"]
        )


# --- the aggregate audit ---------------------------------------------------------------------------------


def _round(monkeypatch, defense, threshold, auditor, shifts, policy="fail_closed"):
    monkeypatch.setenv("SAFE_FEDLLM_AUDIT_LEVEL_SCORING__BACKOFF_S", "0")
    monkeypatch.setenv("SAFE_FEDLLM_AUDIT_LEVEL_AGGREGATE_THRESHOLD", str(threshold))
    monkeypatch.setenv("SAFE_FEDLLM_AUDIT_LEVEL_THRESHOLD", "0.6")
    store = InMemoryStateStore()
    settings = AggregatorSettings(
        defense=defense,
        defense_settings=DefenseSettings(on_probe_unavailable=policy),
        federation=FederationConfig(num_rounds=1, clients_per_round=2),
    )
    service = AggregatorService(
        store, settings, {KEY: np.zeros((3, 2), np.float32)}, population=list(shifts), auditor=auditor
    )
    [summary] = RoundOrchestrator(service, ShiftPool(shifts)).run(progress=False)
    return summary, store


@pytest.mark.parametrize(("threshold", "skipped"), [(0.5, True), (0.5001, False)])
def test_the_aggregate_audit_skips_a_round_whose_aggregate_reaches_the_threshold(
    monkeypatch, threshold, skipped
):
    auditor = ShiftAuditor()
    # FedAvg (a baseline: no update is audited) of shifts 0.25 and 0.75: the aggregate moved 0.5 exactly
    summary, store = _round(monkeypatch, "fedavg", threshold, auditor, {"a": 0.25, "b": 0.75})
    assert auditor.calls == 1 and summary.aggregate_audit == pytest.approx(0.5)
    assert (summary.phase is RoundPhase.SKIPPED) is skipped
    expected = 0.0 if skipped else 0.5
    np.testing.assert_allclose(store.get_global()[1][KEY], expected, rtol=1e-6)
    if skipped:
        assert summary.reason == f"aggregate audit: Δ=0.500 >= {threshold}"
        assert [r.decision for r in store.decision_log()] == ["skipped", "skipped"]


def test_the_aggregate_audit_checks_what_the_level_kept(monkeypatch):
    """The audit level drops b (Δ 0.75 >= 0.6); the aggregate is a's alone (0.25 < 0.3): committed."""
    auditor = ShiftAuditor()
    summary, _ = _round(monkeypatch, "audit", 0.3, auditor, {"a": 0.25, "b": 0.75})
    assert auditor.calls == 3 and summary.factors == {"a": 1.0, "b": 0.0}
    assert summary.phase is RoundPhase.AGGREGATED and summary.aggregate_audit == pytest.approx(0.25)


@pytest.mark.parametrize(("policy", "phase"), [("fail_closed", "skipped"), ("fail_open", "aggregated")])
def test_a_missing_aggregate_audit_follows_the_failure_policy(monkeypatch, policy, phase):
    summary, _ = _round(monkeypatch, "fedavg", 0.5, ShiftAuditor(fail=True), {"a": 0.0, "b": 0.1}, policy)
    assert summary.phase.value == phase and summary.aggregate_audit is None
    if phase == "skipped":
        assert summary.reason.startswith("aggregate audit unavailable (ConnectionError")


def test_an_aggregate_audit_without_an_auditor_is_refused(monkeypatch):
    monkeypatch.setenv("SAFE_FEDLLM_AUDIT_LEVEL_AGGREGATE_THRESHOLD", "0.1")
    with pytest.raises(ValueError, match="the aggregate audit needs an auditor"):
        AggregatorService(
            InMemoryStateStore(),
            AggregatorSettings(defense="fedavg"),
            {KEY: np.zeros((3, 2), np.float32)},
            population=["a"],
        )


def test_no_audit_is_built_when_neither_the_level_nor_the_aggregate_check_asks(monkeypatch):
    monkeypatch.delenv("SAFE_FEDLLM_AUDIT_LEVEL_AGGREGATE_THRESHOLD", raising=False)
    assert AggregatorAudit.build(None, "smollm2-135m", fail_closed=True, auditor=ShiftAuditor()) is None
    level = AggregatorAudit.build(make_defense("audit"), "smollm2-135m", True, ShiftAuditor())
    assert level is not None and level.audits_updates and not level.checks_aggregates
