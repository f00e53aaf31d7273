"""Evidence the server verifies (#22 item 2): the verified level, the last-snapshot check, structural checks,
the norm bound and the trusted-execution guard, on small hand-made states with hand-computed answers."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from services.aggregator.defenses import DefenseSettings, ProbeEvidence, make_defense
from services.aggregator.errors import RefusedUpdate
from services.aggregator.norm_bound import bound_round, calibrate_norm_bound, clip_to_bound, delta_norm
from services.aggregator.scoring import probe_inputs
from services.aggregator.service import AggregatorService
from services.aggregator.settings import AggregatorSettings, FederationConfig
from services.aggregator.state import InMemoryStateStore
from services.aggregator.verification import (
    VerificationError,
    VerificationSettings,
    calibrate_envelope,
    structural_findings,
    verify_last_snapshot,
)
from shared.config import LocalTrainingConfig
from shared.features import FeatureSpec
from shared.updates import ClientUpdate

A0, B0 = "model.layers.0.q_proj.lora_A.weight", "model.layers.0.q_proj.lora_B.weight"
A1, B1 = "model.layers.1.q_proj.lora_A.weight", "model.layers.1.q_proj.lora_B.weight"
TASK = LocalTrainingConfig(local_steps=5, batch_size=4)


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def _global() -> dict[str, np.ndarray]:
    return {
        A0: np.array([[1.0, -1.0]], np.float32),
        B0: np.zeros((2, 1), np.float32),
        A1: np.array([[0.5, 0.5]], np.float32),
        B1: np.zeros((2, 1), np.float32),
    }


def _moved(scale: float = 1.0, layer0: tuple[float, float] = (3.0, 4.0)) -> dict[str, np.ndarray]:
    """The global plus a Δ: layer 0 A += [x, 0], B += [y, 0]; layer 1 A += [0, 1], B += [0, 1] (× scale)."""
    g = _global()
    x, y = layer0
    return {
        A0: g[A0] + np.float32(scale) * np.array([[x, 0.0]], np.float32),
        B0: g[B0] + np.float32(scale) * np.array([[y], [0.0]], np.float32),
        A1: g[A1] + np.float32(scale) * np.array([[0.0, 1.0]], np.float32),
        B1: g[B1] + np.float32(scale) * np.array([[0.0], [1.0]], np.float32),
    }


SPEC = FeatureSpec.for_adapter(_global(), "first_B")  # layer 0's B: [B0] (2 values)


# --- the verified level --------------------------------------------------------------------------------


def _u(p: float, center: float, k: float = 10.0) -> float:
    """1 − g(p), g the client level's smooth step, written out from method.md."""
    if p <= center:
        return 1 - 0.5 * _sigmoid(k * (p / center - 0.5))
    return 1 - (0.5 + 0.5 * _sigmoid(k * ((p - center) / (1 - center) - 0.5)))


def _evidence(verified=None, steps=None, n=20, b=4):
    return ProbeEvidence("c", n, b, step_scores=steps, verified_scores=verified)


def test_verified_level_centres_the_smooth_step_on_the_calibrated_threshold():
    level = make_defense("verified", DefenseSettings(threshold=0.5))
    harmful = level.decide_client(0, _evidence([0.95]), {})
    # 0.5 · σ(−4): centred on τ = 0.5; the client level's centre 0.8 would give 0.5 · σ(−2.5) ≈ 0.038
    assert harmful.factor == pytest.approx(0.5 * _sigmoid(-4.0), rel=1e-12)
    assert harmful.factor == pytest.approx(_u(0.95, 0.5), rel=1e-12)
    assert harmful.trust == pytest.approx({"sum": _u(0.95, 0.5), "rounds": 1})


def test_banked_trust_cannot_pay_for_a_harmful_round():
    level = make_defense("verified", DefenseSettings(threshold=0.5))
    benign = level.decide_client(0, _evidence([0.1]), {})
    harmful = level.decide_client(1, _evidence([0.95]), benign.trust)
    u1, u2 = _u(0.1, 0.5), _u(0.95, 0.5)
    assert benign.factor == pytest.approx(u1, rel=1e-12)
    # min(u, running mean) = u2 ≈ 0.009; the client level's running mean would give (u1 + u2) / 2 ≈ 0.49
    assert harmful.factor == pytest.approx(u2, rel=1e-12)
    back = level.decide_client(2, _evidence([0.1]), harmful.trust)
    assert back.factor == pytest.approx((2 * u1 + u2) / 3, rel=1e-12)  # the mean remembers the bad round


def test_reported_snapshots_only_lower_the_verified_factor():
    level = make_defense("verified", DefenseSettings(threshold=0.5, min_step=2))
    alone = level.decide_client(0, _evidence([0.95]), {}).factor
    # A harmful adapter with benign-looking reported rows: the verified score decides, the rows cannot help.
    forged = level.decide_client(0, _evidence([0.95], steps=[0.0] * 5), {})
    assert forged.factor == alone == pytest.approx(_u(0.95, 0.5), rel=1e-12)
    # A benign-looking verified score with reported rows flagged at steps 2 and 3: scored rows 2..5 stand for
    # b·T/4 = 5 samples each, ρ = 10/20, factor (1 − ρ)^7 = 0.0078125 < u(0.1) ≈ 0.976.
    lowered = level.decide_client(0, _evidence([0.1], steps=[0.9, 0.9, 0.9, 0.1, 0.1]), {})
    assert lowered.factor == 0.5**7
    assert "reported steps rho=0.500" in lowered.reason


def test_missing_verified_scores_follow_the_failure_policy():
    closed = make_defense("verified", DefenseSettings(threshold=0.5)).decide_client(0, _evidence(), {})
    assert closed.factor == pytest.approx(_u(1.0, 0.5), rel=1e-12) and "closed" in closed.reason
    opened = make_defense("verified", DefenseSettings(threshold=0.5, on_probe_unavailable="fail_open"))
    assert opened.decide_client(0, _evidence(), {}).factor == pytest.approx(_u(0.0, 0.5), rel=1e-12)


def test_the_verified_feature_is_the_adapter_minus_the_round_s_global():
    issued = _moved(1.0)  # a drifted global: the feature is measured against it, not against θ^0
    adapter = _moved(1.0, layer0=(3.0, 6.5))
    update = ClientUpdate("c", 0, 20, adapter)  # no snapshots, no b_keys: nothing the client says
    rows = probe_inputs(update, SPEC, issued, ("verified", "steps"))
    assert list(rows) == ["verified"]
    np.testing.assert_array_equal(rows["verified"], [[2.5, 0.0]])


# --- the last reported snapshot ------------------------------------------------------------------------


def test_the_last_snapshot_must_equal_the_adapter_float32_exactly():
    adapter = _moved()
    honest = np.stack([np.zeros(2, np.float32), SPEC.raw(adapter)])  # last row: B0 = [4, 0]
    verify_last_snapshot(ClientUpdate("c", 0, 20, adapter, b_snapshots=honest), SPEC)
    off = honest.copy()
    off[-1, 0] = np.nextafter(np.float32(4.0), np.float32(5.0))  # one float32 ulp
    with pytest.raises(VerificationError, match="in 1 of 2 values") as refused:
        verify_last_snapshot(ClientUpdate("c", 0, 20, adapter, b_snapshots=off), SPEC)
    assert refused.value.check == "snapshot_mismatch"


# --- structure -----------------------------------------------------------------------------------------

CHECKS = VerificationSettings().resolved(verified_level=True)


def test_an_honest_update_has_no_structural_findings():
    assert structural_findings(_moved(), _global(), CHECKS, local_steps=5) == []


def test_a_frozen_layer_and_a_noise_dressed_layer_are_found():
    frozen = {**_moved(), A0: _global()[A0], B0: _global()[B0]}
    checks = [f.check for f in structural_findings(frozen, _global(), CHECKS, 5)]
    assert checks == ["frozen_tensor", "frozen_tensor", "frozen_layer"]
    # Layer 0 moved by 1e-3 · [3, 4] (‖Δ‖ 0.005) while layer 1 moved by √2: 0.005 < 0.01 · median 0.7096
    dressed = _moved(layer0=(3e-3, 4e-3))
    [finding] = structural_findings(dressed, _global(), CHECKS, 5)
    assert finding.check == "frozen_layer" and finding.detail.startswith("layer 0:")
    loose = CHECKS.model_copy(update={"layer_floor": 0.007})  # 0.005 ≥ 0.007 · 0.7096 = 0.00497
    assert structural_findings(dressed, _global(), loose, 5) == []


def test_an_a_matrix_may_stay_put_only_on_a_single_step_from_a_zero_b():
    still = {**_moved(), A0: _global()[A0]}  # issued B0 is zero: one step cannot move A0
    assert structural_findings(still, _global(), CHECKS, local_steps=1) == []
    [finding] = structural_findings(still, _global(), CHECKS, local_steps=2)
    assert finding.check == "frozen_tensor" and A0 in finding.detail


def test_dtype_and_the_calibrated_envelope():
    wide = {**_moved(), B1: _moved()[B1].astype(np.float64)}
    assert [f.check for f in structural_findings(wide, _global(), CHECKS, 5)] == ["dtype"]
    # Benign layer norms: layer 0 = 5 and 10, layer 1 = √2 and 2√2; margin 2 -> [2.5, 20], [√2/2, 4√2].
    envelope = calibrate_envelope([(_moved(1.0), _global()), (_moved(2.0), _global())], margin=2.0)
    assert envelope[0] == pytest.approx((2.5, 20.0)) and envelope[1] == pytest.approx(
        (2**0.5 / 2, 4 * 2**0.5)
    )
    checks = CHECKS.model_copy(update={"layer_envelope": envelope})
    assert structural_findings(_moved(3.0), _global(), checks, 5) == []  # 15 and 3√2: inside
    far = {**_moved(1.0), A1: _moved(4.5)[A1], B1: _moved(4.5)[B1]}  # layer 1: 4.5√2 ≈ 6.36 > 5.66
    [outside] = structural_findings(far, _global(), checks, 5)
    assert outside.check == "envelope" and outside.detail.startswith("layer 1:")


# --- the norm bound ------------------------------------------------------------------------------------


def test_calibrating_and_clipping_the_norm():
    assert calibrate_norm_bound([4.0, 5.0, 6.0], quantile=1.0, margin=1.5) == 9.0
    assert calibrate_norm_bound([4.0, 5.0, 6.0], quantile=0.5, margin=1.5) == 7.5
    assert delta_norm(_moved(), _global()) == pytest.approx(math.sqrt(27.0))  # 9 + 16 + 1 + 1
    clipped, norm = clip_to_bound(_moved(4.0), _global(), 27.0**0.5)
    assert norm == pytest.approx(4 * 27.0**0.5)
    for key, value in _moved(1.0).items():
        np.testing.assert_allclose(clipped[key], value, rtol=1e-6)


def test_the_uncalibrated_bound_is_the_round_s_median_norm():
    updates = [ClientUpdate(c, 0, 20, _moved(s)) for c, s in (("a", 1.0), ("b", 2.0), ("c", 8.0))]
    bounded = bound_round(updates, _global(), None, 1.0)  # median ‖Δ‖ = 2 · √27
    assert [u.lora_state is v.lora_state for u, v in zip(bounded, updates, strict=True)] == [
        True,
        True,
        False,
    ]
    assert delta_norm(bounded[2].lora_state, _global()) == pytest.approx(2 * 27.0**0.5, rel=1e-6)
    assert bounded[2].notes.startswith("norm bound: |delta| 41.57 clipped to 10.39 (1 x the round's median)")


def _flat(state):
    return {k: v.copy() for k, v in state.items()}


SCALE_GLOBAL = {
    "model.layers.0.q_proj.lora_A.weight": np.zeros((1, 2), np.float32),
    "model.layers.0.q_proj.lora_B.weight": np.zeros((2, 1), np.float32),
}
KA, KB = sorted(SCALE_GLOBAL)


class _Benign:
    """A probe that finds nothing: the bound is tested alone."""

    async def score(self, probe_id: str, features: np.ndarray) -> np.ndarray:
        return np.full(len(features), 0.05)


def _service(verification: VerificationSettings, defense: str = "verified") -> AggregatorService:
    settings = AggregatorSettings(
        defense=defense,
        training=TASK,
        verification=verification,
        defense_settings=DefenseSettings(threshold=0.5),
        federation=FederationConfig(clients_per_round=4),
    )
    spec = FeatureSpec.for_adapter(SCALE_GLOBAL, "first_B")
    return AggregatorService(
        InMemoryStateStore(), settings, _flat(SCALE_GLOBAL), _Benign(), "p", spec, population=list("abcx")
    )


def _scaled_round(verification: VerificationSettings) -> dict[str, np.ndarray]:
    """Three honest clients move A by [3, 0] and B by [4, 0] (‖Δ‖ = 5); x submits global + 4 · its own
    Δ (A [0, 3], B [0, 4]): A [0, 12], B [0, 16], ‖Δ‖ = 20. All claim the same 20 samples."""
    service = _service(verification)
    service.open_round(0)
    honest = {KA: np.array([[3.0, 0.0]], np.float32), KB: np.array([[4.0], [0.0]], np.float32)}
    scaled = {KA: np.array([[0.0, 12.0]], np.float32), KB: np.array([[0.0], [16.0]], np.float32)}
    loop = asyncio.new_event_loop()
    for client in "abc":
        loop.run_until_complete(service.submit(ClientUpdate(client, 0, 20, _flat(honest), batch_size=4)))
    loop.run_until_complete(service.submit(ClientUpdate("x", 0, 20, scaled, batch_size=4)))
    loop.run_until_complete(service.close_round(0))
    loop.close()
    return service.store.get_global(1)[1]


def test_a_client_submitting_global_plus_4_delta_no_longer_replaces_the_global():
    unbounded = _scaled_round(VerificationSettings(over_bound="off"))
    # FedAvg of 3 · [3, 0] + [0, 12] over 4: x's direction moves by 3 = its whole Δ, as if 4 clients agreed.
    np.testing.assert_array_equal(unbounded[KA], [[2.25, 3.0]])
    np.testing.assert_array_equal(unbounded[KB], [[3.0], [4.0]])
    for calibrated in (5.0, None):  # a calibrated bound of 5, or the round's median ‖Δ‖ (also 5)
        bounded = _scaled_round(VerificationSettings(norm_bound=calibrated))
        # x clipped to ‖Δ‖ 5 (A [0, 3], B [0, 4]): it moves the global a quarter of its Δ, like an honest one.
        np.testing.assert_array_equal(bounded[KA], [[2.25, 0.75]])
        np.testing.assert_array_equal(bounded[KB], [[3.0], [1.0]])
        assert delta_norm({KA: bounded[KA][:, 1:], KB: bounded[KB][1:]}, {KA: 0, KB: 0}) == 1.25


def test_over_a_calibrated_bound_the_update_can_be_refused():
    service = _service(VerificationSettings(norm_bound=5.0, over_bound="refuse"))
    service.open_round(0)
    big = {KA: np.array([[0.0, 12.0]], np.float32), KB: np.array([[0.0], [16.0]], np.float32)}
    with pytest.raises(RefusedUpdate, match="‖Δ‖ 20 exceeds the calibrated bound 5") as refused:
        service.accept(ClientUpdate("x", 0, 20, big, batch_size=4))
    assert refused.value.check == "norm_bound" and refused.value.status_code == 422
    [record] = service.store.decision_log()
    assert (record.client_id, record.decision, record.weight) == ("x", "refused", 0.0)
    assert record.reason.startswith("refused (norm_bound)")
    with pytest.raises(ValueError, match="needs a calibrated norm_bound"):
        VerificationSettings(over_bound="refuse")


# --- through the service: snapshots, structure, trusted execution -------------------------------------


def test_the_service_refuses_a_last_snapshot_that_disagrees_and_a_frozen_module():
    service = _service(VerificationSettings())
    service.open_round(0)
    honest = {KA: np.array([[3.0, 0.0]], np.float32), KB: np.array([[4.0], [0.0]], np.float32)}
    benign_rows = np.array([[1.0, 0.0]] * 5, np.float32)  # a benign run's rows, last one not this adapter's
    forged = ClientUpdate("a", 0, 20, _flat(honest), b_keys=[KB], b_snapshots=benign_rows, batch_size=4)
    with pytest.raises(RefusedUpdate, match="last b_snapshots row differs") as refused:
        service.accept(forged)
    assert refused.value.check == "snapshot_mismatch"
    frozen = ClientUpdate("b", 0, 20, {**_flat(honest), KA: np.zeros((1, 2), np.float32)}, batch_size=4)
    with pytest.raises(RefusedUpdate, match=r"lora_A\.weight: Δ is exactly zero") as structure:
        service.accept(frozen)
    assert structure.value.check == "structure"
    assert [(r.client_id, r.decision) for r in service.store.decision_log()] == [
        ("a", "refused"),
        ("b", "refused"),
    ]
    consistent = np.array([[1.0, 0.0]] * 4 + [[4.0, 0.0]], np.float32)
    service.accept(ClientUpdate("a", 0, 20, _flat(honest), b_keys=[KB], b_snapshots=consistent, batch_size=4))


def test_flagged_structure_caps_the_factor_instead():
    service = _service(VerificationSettings(structure="flag", flagged_factor=0.1))
    service.open_round(0)
    honest = {KA: np.array([[3.0, 0.0]], np.float32), KB: np.array([[4.0], [0.0]], np.float32)}
    loop = asyncio.new_event_loop()
    for client in "abc":
        loop.run_until_complete(service.submit(ClientUpdate(client, 0, 20, _flat(honest), batch_size=4)))
    frozen = {**_flat(honest), KA: np.zeros((1, 2), np.float32)}
    loop.run_until_complete(service.submit(ClientUpdate("x", 0, 20, frozen, batch_size=4)))
    summary = loop.run_until_complete(service.close_round(0))
    loop.close()
    assert summary.factors["x"] == 0.1 and summary.factors["a"] == pytest.approx(_u(0.05, 0.5), rel=1e-12)
    reason = {r.client_id: r.reason for r in service.store.decision_log()}["x"]
    assert "structure flagged: model.layers.0.q_proj.lora_A.weight: Δ is exactly zero" in reason


def test_forged_snapshots_raise_the_step_level_but_not_the_verified_level():
    """A harmful adapter (its layer-0 B along the probe's malicious direction) reported with four benign rows
    and an honest last row: the step level counts 3 of 4 scored rows benign, the verified level reads Δ."""

    class Direction:
        async def score(self, probe_id: str, features: np.ndarray) -> np.ndarray:
            return np.where(features[:, 1] > 0, 0.95, 0.05)  # B's second value > 0: malicious

    harmful = {KA: np.array([[0.0, 3.0]], np.float32), KB: np.array([[0.0], [4.0]], np.float32)}
    rows = np.array([[4.0, 0.0]] * 4 + [[0.0, 4.0]], np.float32)
    factors = {}
    for defense in ("step", "verified"):
        settings = AggregatorSettings(
            defense=defense,
            training=TASK,
            defense_settings=DefenseSettings(threshold=0.5, min_step=2),
            federation=FederationConfig(clients_per_round=1),
        )
        spec = FeatureSpec.for_adapter(SCALE_GLOBAL, "first_B")
        service = AggregatorService(
            InMemoryStateStore(), settings, _flat(SCALE_GLOBAL), Direction(), "p", spec, population=["x"]
        )
        service.open_round(0)
        loop = asyncio.new_event_loop()
        update = ClientUpdate("x", 0, 20, _flat(harmful), b_keys=[KB], b_snapshots=rows, batch_size=4)
        loop.run_until_complete(service.submit(update))
        factors[defense] = loop.run_until_complete(service.close_round(0)).factors["x"]
        loop.close()
    # step: 1 of 4 scored rows flagged (5 of 20 samples): α = 0.95 + 15, β = 0.95 + 5 -> 15.95 / 21.9
    assert factors["step"] == pytest.approx(15.95 / 21.9, rel=1e-12)
    assert factors["verified"] == pytest.approx(_u(0.95, 0.5), rel=1e-12)  # ≈ 0.009: the rows do not help


def test_shadow_levels_need_trusted_execution():
    assert AggregatorSettings().defense == "verified"
    AggregatorSettings().validate_defense()
    for defense in ("shadow", "evidence", "audit+shadow", "audit+evidence"):
        with pytest.raises(ValueError, match="only under trusted execution") as error:
            AggregatorSettings(defense=defense).validate_defense()
        assert "SAFE_FEDLLM_AGGREGATOR_TRUSTED_EXECUTION=true" in str(error.value)
        AggregatorSettings(defense=defense, trusted_execution=True).validate_defense()
    with pytest.raises(ValueError, match="only under trusted execution"):
        AggregatorService(InMemoryStateStore(), AggregatorSettings(defense="shadow"), _flat(SCALE_GLOBAL))


def test_the_checks_are_on_by_default_only_under_a_verified_level():
    on = VerificationSettings().resolved(verified_level=True)
    off = VerificationSettings().resolved(verified_level=False)
    assert (on.over_bound, on.structure, off.over_bound, off.structure) == ("clip", "refuse", "off", "off")
    explicit = VerificationSettings(over_bound="clip", structure="flag").resolved(verified_level=False)
    assert (explicit.over_bound, explicit.structure) == ("clip", "flag")
