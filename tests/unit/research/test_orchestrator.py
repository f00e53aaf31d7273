"""The round orchestrator with an in-process numpy client pool (pure logic, no Ray)."""

from collections.abc import Sequence

import numpy as np
import pytest

from research.orchestrator import RoundOrchestrator
from services.aggregator.service import AggregatorService
from services.aggregator.settings import AggregatorSettings, FederationConfig
from services.aggregator.state import InMemoryStateStore, RoundPhase
from shared.config import LocalTrainingConfig
from shared.updates import ClientUpdate

KEY = "layers.0.v_proj.lora_B.weight"
TASK = LocalTrainingConfig()  # what the service tells clients to train by default


class ShiftPool:
    """Each client adds its own constant to the global adapter; can crash after k clients."""

    def __init__(self, shifts: dict[str, float], crash_after: int | None = None) -> None:
        self.shifts, self.crash_after, self.calls = shifts, crash_after, []

    @property
    def client_ids(self) -> list[str]:
        return list(self.shifts)

    def train_round(
        self, client_ids: Sequence[str], global_state, round_index: int, lr: float, shadow=None
    ) -> list[ClientUpdate]:
        out = []
        for cid in client_ids:
            if self.crash_after is not None and len(self.calls) >= self.crash_after:
                raise RuntimeError("aggregator crashed")
            self.calls.append((round_index, cid))
            state = {KEY: global_state[KEY] + self.shifts[cid]}
            out.append(ClientUpdate(cid, round_index, 10, state, batch_size=TASK.batch_size))
        return out


def _initial():
    return {KEY: np.zeros((3, 2), np.float32)}


def _orchestrator(store, pool, config: FederationConfig) -> RoundOrchestrator:
    settings = AggregatorSettings(defense="fedavg", federation=config)
    service = AggregatorService(store, settings, _initial(), population=pool.client_ids)
    return RoundOrchestrator(service, pool)


def test_rounds_apply_fedavg_of_the_sampled_clients():
    pool = ShiftPool({"a": 1.0, "b": 3.0})
    store = InMemoryStateStore()
    orchestrator = _orchestrator(store, pool, FederationConfig(num_rounds=3, clients_per_round=2))
    summaries = orchestrator.run(progress=False)
    assert [s.phase for s in summaries] == [RoundPhase.AGGREGATED] * 3
    version, state = store.get_global()
    assert version == 3
    np.testing.assert_allclose(state[KEY], 3 * 2.0)
    assert len(store.decision_log()) == 6


def test_lr_follows_the_cosine_schedule_per_round():
    pool = ShiftPool({"a": 1.0})
    store = InMemoryStateStore()
    config = FederationConfig(num_rounds=4, clients_per_round=1, lr={"lr_max": 1e-3, "lr_min": 1e-5})
    _orchestrator(store, pool, config).run(progress=False)
    assert [store.get_round(r).lr for r in range(4)] == pytest.approx(
        [config.lr.at_round(r, 4) for r in range(4)]
    )


def test_a_crash_mid_round_resumes_without_losing_or_recounting_updates():
    shifts = {"a": 1.0, "b": 2.0, "c": 4.0}
    store = InMemoryStateStore()
    config = FederationConfig(num_rounds=1, clients_per_round=3)
    crashing = ShiftPool(shifts, crash_after=2)
    with pytest.raises(RuntimeError, match="crashed"):
        _orchestrator(store, crashing, config).run_round(0)
    assert store.get_round(0).phase is RoundPhase.OPEN
    # The crash happened inside train_round before anything was returned: nothing was accepted yet.
    assert store.list_updates(0) == []
    # Accept two updates, then "restart": only the missing client trains again.
    for update in ShiftPool(shifts).train_round(["a", "b"], _initial(), 0, 1e-4):
        store.add_update(update)
    restarted = ShiftPool(shifts)
    _orchestrator(store, restarted, config).run_round(0)
    assert restarted.calls == [(0, "c")]
    assert len(store.list_updates(0)) == 3
    np.testing.assert_allclose(store.get_global()[1][KEY], (1 + 2 + 4) / 3)


def test_a_closed_round_is_not_run_again():
    pool = ShiftPool({"a": 1.0})
    store = InMemoryStateStore()
    orchestrator = _orchestrator(store, pool, FederationConfig(num_rounds=1, clients_per_round=1))
    orchestrator.run_round(0)
    orchestrator.run_round(0)
    assert pool.calls == [(0, "a")]
    assert store.get_global()[0] == 1


class ShadowPool(ShiftPool):
    """Sends two shadow snapshots only when the task asks for the shadow branch, and records each ask."""

    def __init__(self, shifts: dict[str, float]) -> None:
        super().__init__(shifts)
        self.shadow_asked: list[tuple[int, str, bool]] = []

    def train_round(self, client_ids, global_state, round_index, lr, shadow=None):
        out = []
        for update in super().train_round(client_ids, global_state, round_index, lr):
            wanted = bool(shadow[update.client_id])
            self.shadow_asked.append((round_index, update.client_id, wanted))
            update.b_keys = [KEY]
            rows = TASK.local_steps
            update.shadow_snapshots = (
                np.full((rows, 6), 0.5, np.float32) if wanted else np.zeros((0, 0), np.float32)
            )
            out.append(update)
        return out


class BenignScorer:
    def __init__(self) -> None:
        self.rows = 0

    async def score(self, probe_id: str, features: np.ndarray) -> np.ndarray:
        self.rows += len(features)
        return np.full(len(features), 0.1)


def test_evidence_level_frozen_clients_skip_the_shadow_branch_until_their_fifth_participation():
    """Simulated run of the evidence level with the default audit interval (5): every client is benign,
    so it is frozen at its 3rd participation and trains the shadow branch again only at the 5th
    participation after that (and every 5th after a passed audit). The service accepts the updates
    without shadow snapshots from frozen clients."""
    from services.aggregator.defenses import DefenseSettings
    from shared.features import FeatureSpec

    pool, scorer, store = ShadowPool({"a": 1.0, "b": 2.0, "c": 3.0}), BenignScorer(), InMemoryStateStore()
    settings = AggregatorSettings(
        defense="evidence",
        federation=FederationConfig(num_rounds=40, clients_per_round=2),
        trusted_execution=True,  # the pool's actors are ours: the shadow branch runs as told
    )
    assert settings.defense_settings == DefenseSettings() and settings.defense_settings.reprobe_interval == 5
    spec = FeatureSpec(keys=(KEY,), shapes=((3, 2),))
    service = AggregatorService(
        store, settings, _initial(), scorer, "probe", spec, population=pool.client_ids
    )
    RoundOrchestrator(service, pool).run(progress=False)
    for client in "abc":
        asks = [wanted for _, c, wanted in pool.shadow_asked if c == client]
        # participation k (1-based) needs a shadow branch iff k <= 3 or (k - 3) is a multiple of 5
        assert asks == [k <= 3 or (k - 3) % 5 == 0 for k in range(1, len(asks) + 1)], client
    trained = sum(wanted for *_, wanted in pool.shadow_asked)
    assert len(pool.shadow_asked) == 80 and scorer.rows == TASK.local_steps * trained
    skipped = 80 - trained
    assert skipped == 80 - sum(3 + (n - 3) // 5 for n in _participations(pool).values())
    assert skipped == 59  # the saving: 59 of 80 shadow branches skipped (docs/aggregator.md)


def _participations(pool: ShadowPool) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, client, _ in pool.shadow_asked:
        counts[client] = counts.get(client, 0) + 1
    return counts


def test_a_refused_update_leaves_the_round_to_the_others():
    """A client whose update a server check refuses (here a frozen one: Δ exactly zero, under fedavg with the
    structural checks on) is logged as refused; the round aggregates the others."""
    from services.aggregator.verification import VerificationSettings

    pool, store = ShiftPool({"a": 1.0, "frozen": 0.0, "b": 3.0}), InMemoryStateStore()
    settings = AggregatorSettings(
        defense="fedavg",
        federation=FederationConfig(num_rounds=1, clients_per_round=3),
        verification=VerificationSettings(structure="refuse"),
    )
    service = AggregatorService(store, settings, _initial(), population=pool.client_ids)
    [summary] = RoundOrchestrator(service, pool).run(progress=False)
    assert summary.phase is RoundPhase.AGGREGATED and summary.weights == {"a": 0.5, "b": 0.5}
    np.testing.assert_allclose(store.get_global()[1][KEY], 2.0)
    decisions = [(r.client_id, r.decision) for r in store.decision_log()]
    assert decisions == [("frozen", "refused"), ("a", "aggregated"), ("b", "aggregated")]


def test_a_close_that_crashed_before_its_commit_is_finished_without_training_again():
    shifts = {"a": 1.0, "b": 2.0, "c": 4.0}
    store = InMemoryStateStore()
    config = FederationConfig(num_rounds=1, clients_per_round=3)
    orchestrator = _orchestrator(store, ShiftPool(shifts), config)
    orchestrator.service.open_round(0)
    for update in ShiftPool(shifts).train_round(["a", "b"], _initial(), 0, 1e-4):
        store.add_update(update)
    store.begin_close(0)  # the close began (no more updates), then the aggregator died
    restarted = ShiftPool(shifts)
    summary = _orchestrator(store, restarted, config).run_round(0)
    assert restarted.calls == [] and summary.phase is RoundPhase.AGGREGATED  # "c" is not trained: too late
    np.testing.assert_allclose(store.get_global()[1][KEY], (1 + 2) / 2)
    assert [a.client_id for a in store.decision_log()] == ["a", "b"]
