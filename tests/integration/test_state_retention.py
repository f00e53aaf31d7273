"""Retention (StateStore.prune_rounds) on the in-memory store and on a real redis-server, and its use by the
aggregator after each commit (AggregatorSettings.retain_rounds)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services.aggregator.scores import UpdateScores
from services.aggregator.service import AggregatorService
from services.aggregator.settings import AggregatorSettings
from services.aggregator.state import (
    DecisionRecord,
    InMemoryStateStore,
    PruneReport,
    RedisStateStore,
    RoundPhase,
    RoundRecord,
    StateStoreError,
)
from shared.updates import ClientUpdate

pytestmark = pytest.mark.integration

KEY = "layers.0.q_proj.lora_B.weight"


def _update(cid: str, value: float, round_index: int) -> ClientUpdate:
    snapshots = np.full((3, 4), value, np.float32)
    return ClientUpdate(
        cid,
        round_index,
        8,
        {KEY: np.full((2, 2), value, np.float32)},
        [KEY],
        snapshots,
        0.5,
        snapshots * 2,
        4,
    )


@pytest.fixture(params=["memory", "redis"])
def federation(request):
    """Rounds 0-3 finished (a: a new adapter each round; b: the same bytes every round, so in Redis its
    content-addressed blobs are shared by every round), round 4 open with b's update."""
    store = (
        InMemoryStateStore()
        if request.param == "memory"
        else RedisStateStore(request.getfixturevalue("redis_client"), namespace="retention")
    )
    store.put_global(0, {KEY: np.zeros((2, 2), np.float32)})
    for r in range(5):
        store.open_round(RoundRecord(r, ["a", "b"], r, 1e-4))
        if r < 4:
            store.add_update(_update("a", r + 1.0, r))
        store.add_update(_update("b", 100.0, r))
        if r < 4:
            audit = [DecisionRecord(r, c, "aggregated", 0.5) for c in ("a", "b")]
            store.begin_close(r)
            store.close_round(r, RoundPhase.AGGREGATED, r + 1, {KEY: np.full((2, 2), r, np.float32)}, audit)
            store.put_scores(r, store.update_ids(r)[0], UpdateScores(verified=(0.1,)))
    return store


def _blobs(store) -> int:  # type: ignore[no-untyped-def]
    return sum(1 for _ in store.redis.scan_iter(match="retention:blob:*"))


def test_prune_keeps_the_last_rounds_the_decision_log_and_shared_blobs(federation):
    store = federation
    if isinstance(store, RedisStateStore):
        assert _blobs(store) == 4 * 2 + 2  # a: adapter + snapshots per round; b: one pair, shared
    audit = store.decision_log()
    report = store.prune_rounds(keep=2)
    # Finished rounds 0-3, keep 2 and 3 (and open 4); versions 0 (layout), 2-4 (kept rounds) and latest stay.
    assert report == PruneReport(rounds=(0, 1), global_versions=(1,), updates=4)
    for r in (0, 1):
        assert (store.update_ids(r), store.get_scores(r), store.round_clients(r)) == ([], {}, {})
        record = store.get_round(r)
        assert (record.phase, record.global_version, record.result_version) == (
            RoundPhase.AGGREGATED,
            r,
            r + 1,
        )
    with pytest.raises(StateStoreError):
        store.get_global(1)
    assert [store.get_global(v)[0] for v in (0, 2, 3, 4)] == [0, 2, 3, 4]
    # b's blobs are shared with the kept and the open rounds: its updates there still decode.
    for r in (2, 3, 4):
        assert float(store.list_updates(r)[-1].lora_state[KEY][0, 0]) == 100.0
    assert len(store.get_scores(3)) == 1
    assert store.decision_log() == audit
    if isinstance(store, RedisStateStore):
        assert _blobs(store) == 2 * 2 + 2  # a's rounds 0 and 1 gone, b's shared pair kept
    assert store.prune_rounds(keep=2) == PruneReport()  # idempotent
    assert store.prune_rounds(keep=1) == PruneReport(rounds=(2,), global_versions=(2,), updates=2)
    with pytest.raises(ValueError, match="keep must be at least 1"):
        store.prune_rounds(keep=0)


def test_the_aggregator_prunes_after_each_commit() -> None:
    store = InMemoryStateStore()
    settings = AggregatorSettings(defense="fedavg", retain_rounds=1)
    service = AggregatorService(store, settings, {KEY: np.zeros((2, 2), np.float32)})
    for r in range(3):
        store.open_round(RoundRecord(r, ["a"], r, 1e-4))
        store.add_update(_update("a", r + 1.0, r))
        asyncio.run(service.close_round(r))
    assert [len(store.update_ids(r)) for r in range(3)] == [0, 0, 1]
    assert sorted(store._globals) == [0, 2, 3]
    assert [store.get_round(r).phase for r in range(3)] == [RoundPhase.AGGREGATED] * 3
    # Without the setting nothing is dropped.
    keeping = InMemoryStateStore()
    service = AggregatorService(
        keeping, AggregatorSettings(defense="fedavg"), {KEY: np.zeros((2, 2), np.float32)}
    )
    for r in range(3):
        keeping.open_round(RoundRecord(r, ["a"], r, 1e-4))
        keeping.add_update(_update("a", r + 1.0, r))
        asyncio.run(service.close_round(r))
    assert [len(keeping.update_ids(r)) for r in range(3)] == [1, 1, 1]
