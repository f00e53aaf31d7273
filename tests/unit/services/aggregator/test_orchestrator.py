"""The round orchestrator with an in-process numpy client pool (pure logic, no Ray)."""

from collections.abc import Sequence

import numpy as np
import pytest

from services.aggregator.orchestrator import RoundOrchestrator
from services.aggregator.service import AggregatorService
from services.aggregator.settings import AggregatorSettings, FederationConfig
from services.aggregator.state import InMemoryStateStore, RoundPhase
from shared.updates import ClientUpdate

KEY = "layers.0.v_proj.lora_B.weight"


class ShiftPool:
    """Each client adds its own constant to the global adapter; can crash after k clients."""

    def __init__(self, shifts: dict[str, float], crash_after: int | None = None) -> None:
        self.shifts, self.crash_after, self.calls = shifts, crash_after, []

    @property
    def client_ids(self) -> list[str]:
        return list(self.shifts)

    def train_round(
        self, client_ids: Sequence[str], global_state, round_index: int, lr: float
    ) -> list[ClientUpdate]:
        out = []
        for cid in client_ids:
            if self.crash_after is not None and len(self.calls) >= self.crash_after:
                raise RuntimeError("aggregator crashed")
            self.calls.append((round_index, cid))
            out.append(ClientUpdate(cid, round_index, 10, {KEY: global_state[KEY] + self.shifts[cid]}))
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
    assert len(store.audit_log()) == 6


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
