"""Acceptance and closing are mutually exclusive, on a real redis-server: submissions race the round's
close over many rounds with random jitter, and every acknowledged update ends in exactly one decision record
of its round (aggregated, or dropped/skipped with a reason) and in the round's aggregate; every update not
acknowledged got a round conflict and is in neither. A retry after the close is a duplicate (202) if the
update was acknowledged, a conflict if not.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter

import numpy as np
import pytest

from services.aggregator.service import AggregatorService, RoundConflict
from services.aggregator.settings import AggregatorSettings, FederationConfig
from services.aggregator.state import RedisStateStore, RoundPhase
from shared.config import LocalTrainingConfig, LoraSettings
from shared.updates import ClientUpdate
from tests.integration.hostile_apps import adapter
from tests.toy_lora import PREFIX

pytestmark = pytest.mark.integration
CLIENTS = [f"c{i}" for i in range(10)]
ROUNDS = 16
B_KEY = f"{PREFIX}.0.self_attn.q_proj.lora_B.weight"


def _service(redis_client) -> AggregatorService:  # type: ignore[no-untyped-def]
    settings = AggregatorSettings(
        defense="fedavg",
        model="smollm2-135m",
        lora=LoraSettings(r=2),
        training=LocalTrainingConfig(local_steps=3, batch_size=2),
        federation=FederationConfig(clients_per_round=len(CLIENTS), num_rounds=ROUNDS),
    )
    store = RedisStateStore(redis_client, namespace=f"race{time.monotonic_ns()}")
    return AggregatorService(store, settings, adapter(0.0), population=CLIENTS)


def _value(round_index: int, client: int) -> float:
    return float(round_index * 100 + client + 1)  # distinct per update: the aggregate says who is in it


def test_every_acknowledged_update_is_aggregated_or_logged_exactly_once(redis_client):
    service = _service(redis_client)
    rng = random.Random(23)
    acknowledged: set[tuple[int, str]] = set()
    refused: set[tuple[int, str]] = set()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def update_of(round_index: int, client: int) -> ClientUpdate:
        return ClientUpdate(
            CLIENTS[client], round_index, 6, adapter(_value(round_index, client)), batch_size=2
        )

    def submit(round_index: int, client: int, delay: float) -> None:
        update = update_of(round_index, client)
        time.sleep(delay)
        try:
            service.accept(update)
            outcome = acknowledged
        except RoundConflict:
            outcome = refused
        except BaseException as error:  # reported below, never swallowed
            errors.append(error)
            return
        with lock:
            outcome.add((round_index, CLIENTS[client]))

    for round_index in range(ROUNDS):
        service.open_round(round_index)
        # Submissions spread over 0-60 ms, the close somewhere in 10-40 ms: some land before, some after.
        threads = [
            threading.Thread(target=submit, args=(round_index, c, rng.uniform(0, 0.06)))
            for c in range(len(CLIENTS))
        ]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.01, 0.04))
        asyncio.run(service.close_round(round_index))
        for thread in threads:
            thread.join()
    assert not errors, errors

    log = service.decision_log()
    logged = Counter((a.round_index, a.client_id) for a in log)
    assert set(logged) == acknowledged and set(logged.values()) == {1}  # exactly once, nothing lost
    assert not acknowledged & refused and len(acknowledged | refused) == ROUNDS * len(CLIENTS)
    assert all((a.decision == "aggregated" and a.weight > 0) or a.reason for a in log)
    # the race really happened: both outcomes occurred, in the same rounds
    mixed = {r for r, _ in acknowledged} & {r for r, _ in refused}
    assert len(acknowledged) >= ROUNDS and len(refused) >= ROUNDS and len(mixed) >= 2, (
        len(acknowledged),
        len(refused),
        len(mixed),
    )
    # the aggregate holds exactly the acknowledged updates (equal weights: FedAvg is their mean)
    previous = 0.0
    for round_index in range(ROUNDS):
        record = service.store.get_round(round_index)
        members = [c for r, c in acknowledged if r == round_index]
        expected = np.mean([_value(round_index, CLIENTS.index(c)) for c in members]) if members else previous
        assert record is not None and record.phase is (
            RoundPhase.AGGREGATED if members else RoundPhase.SKIPPED
        )
        _, state = service.store.get_global(record.result_version)
        np.testing.assert_allclose(state[B_KEY], expected, rtol=1e-6)
        previous = float(expected)
    # after the close, a retry of an acknowledged update is still a duplicate; a refused one stays refused
    for round_index, client in sorted(acknowledged)[:5]:
        assert service.accept(update_of(round_index, CLIENTS.index(client)))[1] is False
    for round_index, client in sorted(refused)[:5]:
        with pytest.raises(RoundConflict, match="closed: it accepts no more"):
            service.accept(update_of(round_index, CLIENTS.index(client)))
