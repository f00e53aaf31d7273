"""The round scheduler: its pure decision, its loop over a real service, and the Redis leadership lease."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services.aggregator.leadership import LocalLease, RedisLease
from services.aggregator.scheduler import Action, RoundScheduler, RoundView, SchedulerSettings, next_action
from shared.updates import ClientUpdate

S = SchedulerSettings(enabled=True, round_deadline_s=60, min_updates=2, min_clients=3)
KEY = "layers.0.v_proj.lora_B.weight"


def test_opens_round_zero_only_once_min_clients_registered():
    assert next_action(None, 2, 0.0, S, 3) == Action("wait", 0, why="2 of min_clients 3 registered")
    assert next_action(None, 3, 0.0, S, 3) == Action("open", 0)


def test_an_open_round_waits_for_every_sampled_client_or_the_deadline():
    waiting = RoundView(4, True, sampled=3, submitted=2, opened_at=100.0)
    assert next_action(waiting, 3, 159.9, S, 10).kind == "wait"
    at_deadline = next_action(waiting, 3, 160.0, S, 10)
    assert at_deadline == Action("close", 4, None, "60s deadline")  # 2 updates = min_updates: aggregated
    everyone = RoundView(4, True, sampled=3, submitted=3, opened_at=100.0)
    all_in = Action("close", 4, None, "every sampled client submitted")
    assert next_action(everyone, 3, 101.0, S, 10) == all_in


def test_a_round_below_min_updates_closes_as_a_skip_with_its_reason():
    one = RoundView(1, True, sampled=3, submitted=1, opened_at=0.0)
    action = next_action(one, 3, 61.0, S, 10)
    assert action.kind == "close" and action.round_index == 1
    assert action.skip_reason == "1 of 3 sampled clients submitted by the 60s deadline; min_updates is 2"


def test_a_close_that_began_and_did_not_commit_is_resumed_at_once():
    # a crashed close left the round closing: no update can arrive, so neither everyone nor the deadline
    closing = RoundView(2, False, sampled=3, submitted=2, opened_at=None, closing=True)
    assert next_action(closing, 3, 0.0, S, 10) == Action("close", 2, None, "resuming a close that began")
    below = RoundView(2, False, sampled=3, submitted=1, opened_at=None, closing=True)
    assert next_action(below, 3, 0.0, S, 10).skip_reason is not None  # min_updates still holds


def test_the_next_round_opens_after_a_closed_one_until_max_rounds():
    closed = RoundView(1, False, sampled=3, submitted=3, opened_at=None)
    assert next_action(closed, 3, 0.0, S, 3) == Action("open", 2)
    last = RoundView(2, False, sampled=3, submitted=3, opened_at=None)
    assert next_action(last, 3, 0.0, S, 3) == Action("done", 3, why="max_rounds 3 reached")


def _service(clients: list[str], settings: SchedulerSettings):  # type: ignore[no-untyped-def]
    from services.aggregator.service import AggregatorService
    from services.aggregator.settings import AggregatorSettings, FederationConfig
    from services.aggregator.state import InMemoryStateStore

    aggregator = AggregatorSettings(
        defense="fedavg", federation=FederationConfig(clients_per_round=3, num_rounds=2), scheduler=settings
    )
    store = InMemoryStateStore()
    for client in clients:
        store.register_client(client, "hash")
    return AggregatorService(store, aggregator, {KEY: np.zeros((3, 2), np.float32)})


def _update(client: str, round_index: int, value: float) -> ClientUpdate:
    return ClientUpdate(client, round_index, 4, {KEY: np.full((3, 2), value, np.float32)}, batch_size=4)


def test_the_loop_runs_rounds_through_the_service_with_a_clock():
    now = [0.0]
    service = _service(["a", "b", "c"], S)
    closed: list = []
    scheduler = RoundScheduler(service, LocalLease(), closed.append, clock=lambda: now[0])
    loop = asyncio.new_event_loop()
    tick = lambda: loop.run_until_complete(scheduler.tick())  # noqa: E731
    assert tick() == Action("open", 0)
    for client, value in (("a", 1.0), ("b", 3.0)):
        loop.run_until_complete(service.submit(_update(client, 0, value)))
    assert tick().kind == "wait"  # c has not submitted, the deadline is 60 s away
    now[0] = 60.0
    assert tick() == Action("close", 0, None, "60s deadline")
    assert closed[0].phase.value == "aggregated" and closed[0].weights == {"a": 0.5, "b": 0.5}
    np.testing.assert_allclose(service.store.get_global(1)[1][KEY], 2.0)
    with pytest.raises(Exception, match="round 0 closed: it accepts no more updates"):  # a straggler
        loop.run_until_complete(service.submit(_update("c", 0, 5.0)))
    assert tick() == Action("open", 1)
    loop.run_until_complete(service.submit(_update("a", 1, 7.0)))
    now[0] = 130.0
    assert tick().skip_reason == "1 of 3 sampled clients submitted by the 60s deadline; min_updates is 2"
    assert closed[1].phase.value == "skipped" and service.store.get_round(1).result_version == 2
    np.testing.assert_allclose(service.store.get_global(2)[1][KEY], 2.0)  # the skip kept the global
    assert [a.decision for a in service.store.decision_log()][-1] == "skipped"
    assert tick().kind == "done"  # num_rounds 2
    loop.close()


def test_run_stops_after_max_rounds_and_on_stop():
    service = _service(["a", "b", "c"], S.model_copy(update={"poll_interval_s": 0.01, "min_updates": 0}))
    ticks = iter(range(0, 10**9, 100))  # every call 100 s later: each deadline passes at the next look
    scheduler = RoundScheduler(service, LocalLease(), clock=lambda: float(next(ticks)))
    asyncio.run(asyncio.wait_for(scheduler.run(asyncio.Event()), 5))
    assert [service.store.get_round(r).phase.value for r in (0, 1)] == ["skipped", "skipped"]  # no updates
    assert service.store.get_round(2) is None


def test_the_redis_lease_has_one_holder_and_passes_on_after_release(redis_client, redis_server):
    first = RedisLease(redis_server.client(), "ns", ttl_s=30)
    second = RedisLease(redis_server.client(), "ns", ttl_s=30)
    assert first.acquire() and first.acquire()  # renews its own
    assert not second.acquire()
    second.release()  # not its lease: no effect
    assert not second.acquire()
    first.release()
    assert second.acquire() and not first.acquire()
    assert redis_client.pttl("ns:scheduler:leader") > 25_000
    assert first.opened_at(3, 10.0) == 10.0 and second.opened_at(3, 99.0) == 10.0  # one deadline for all


def test_an_expired_lease_passes_to_another_replica(redis_client, redis_server):
    import time

    dead = RedisLease(redis_server.client(), "ns", ttl_s=30)
    alive = RedisLease(redis_server.client(), "ns", ttl_s=30)
    assert dead.acquire() and not alive.acquire()
    redis_client.pexpire("ns:scheduler:leader", 1)  # the dead replica's TTL runs out: it renews no more
    time.sleep(0.05)
    assert alive.acquire() and not dead.acquire()
