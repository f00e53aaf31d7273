"""The service keeps its event loop free: a submission stores and a close aggregates and commits in worker
threads (the loop keeps running meanwhile), and a round's status learns who submitted without decoding
adapters. In-process, on the in-memory store; the same over real HTTP and Redis:
tests/integration/test_close_off_loop.py."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from services.aggregator.service import AggregatorService
from services.aggregator.settings import AggregatorSettings, FederationConfig
from services.aggregator.state import InMemoryStateStore, RoundPhase
from services.aggregator.strategies import AggregationResult, FedAvg
from shared.lora_state import LoraState
from shared.updates import ClientUpdate

KEY = "layers.0.v_proj.lora_B.weight"
HOLD_S = 0.5


class HeldFedAvg(FedAvg):
    """FedAvg that holds its thread HOLD_S seconds first (blocking, as CPU-bound work would) and records
    which thread aggregated."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def _aggregate(
        self,
        global_state: LoraState,
        updates: Sequence[ClientUpdate],
        factors: Sequence[float] | None,
        round_index: int | None,
    ) -> AggregationResult:
        self.threads.append(threading.current_thread())
        time.sleep(HOLD_S)
        return super()._aggregate(global_state, updates, factors, round_index)


def _service() -> AggregatorService:
    settings = AggregatorSettings(
        defense="fedavg", federation=FederationConfig(clients_per_round=2, num_rounds=1)
    )
    return AggregatorService(
        InMemoryStateStore(), settings, {KEY: np.zeros((3, 2), np.float32)}, population=["a", "b"]
    )


def _update(client: str, value: float) -> ClientUpdate:
    return ClientUpdate(client, 0, 4, {KEY: np.full((3, 2), value, np.float32)}, batch_size=4)


def test_a_close_aggregates_in_a_worker_thread_while_the_loop_runs():
    service = _service()
    service.strategy = rule = HeldFedAvg()
    service.open_round(0)
    loop = asyncio.new_event_loop()
    try:
        stores: list[threading.Thread] = []
        add_update = service.store.add_update

        def recording_add_update(update: ClientUpdate) -> tuple[str, bool]:
            stores.append(threading.current_thread())
            return add_update(update)

        service.store.add_update = recording_add_update  # type: ignore[method-assign]
        for client, value in (("a", 1.0), ("b", 3.0)):
            loop.run_until_complete(service.submit(_update(client, value)))

        async def close_while_ticking() -> tuple[int, object]:
            ticks = 0
            closing = asyncio.ensure_future(service.close_round(0))
            while not closing.done():
                await asyncio.sleep(0.01)
                ticks += 1
            return ticks, closing.result()

        ticks, summary = loop.run_until_complete(close_while_ticking())
    finally:
        loop.close()
    # The loop ran its ticker through the held aggregation (blocking on the loop, it would tick about once).
    assert ticks >= HOLD_S / 0.01 / 4, ticks
    main = threading.main_thread()
    assert len(stores) == 2 and main not in stores and rule.threads and main not in rule.threads
    assert summary.phase is RoundPhase.AGGREGATED and summary.weights == {"a": 0.5, "b": 0.5}  # type: ignore[attr-defined]
    _, state = service.store.get_global(1)
    np.testing.assert_array_equal(state[KEY], np.full((3, 2), 2.0, np.float32))


def test_round_status_names_submitters_in_acceptance_order_without_decoding():
    service = _service()
    service.open_round(0)
    loop = asyncio.new_event_loop()
    try:
        for client, value in (("b", 1.0), ("a", 2.0)):
            loop.run_until_complete(service.submit(_update(client, value)))
    finally:
        loop.close()
    ids = service.store.update_ids(0)
    service.store.get_update = lambda _: pytest.fail("round_status decoded an update")  # type: ignore[method-assign]
    status = service.round_status(0)
    assert [(u.update_id, u.client_id) for u in status.updates] == list(zip(ids, ["b", "a"], strict=True))
    assert status.missing == [] and status.phase == "open"
