"""Closing a round never blocks the aggregator's event loop: while a deliberately slow aggregation rule
(3 s, the stand-in for Bulyan's O(n³d) on a large round) runs inside `POST /v1/admin/rounds/0/close`,
`GET /v1/task` and the round's status answer within a second, over real HTTP, on a real redis-server,
under a baseline rule and under a probed defense level (whose scoring tasks the close awaits on the loop).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import httpx
import numpy as np
import pytest
from safetensors.numpy import save

from services.aggregator.api.app import create_app
from services.aggregator.strategies import AggregationResult, FedAvg, Strategy
from services.aggregator.strategies.median import Median
from shared.lora_state import LoraState
from shared.updates import ClientUpdate
from tests.integration.hostile_apps import (
    ADMIN_TOKEN,
    ServerThread,
    adapter,
    aggregator_service,
    aggregator_settings,
    export_probe,
)

pytestmark = pytest.mark.integration
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
SLOW_S = 3.0
BOUND_S = 1.0


def slow(rule: type[Strategy]) -> tuple[Strategy, threading.Event]:
    """`rule` that first holds its thread for SLOW_S seconds (a blocking sleep, as CPU-bound work would),
    and the event it sets on entering."""
    entered = threading.Event()

    class Slow(rule):  # type: ignore[valid-type, misc]
        def _aggregate(
            self,
            global_state: LoraState,
            updates: Sequence[ClientUpdate],
            factors: Sequence[float] | None,
            round_index: int | None,
        ) -> AggregationResult:
            entered.set()
            time.sleep(SLOW_S)
            return super()._aggregate(global_state, updates, factors, round_index)

    return Slow(), entered


def _submission(value: float, dim: int) -> dict:
    rows = np.full((3, dim), value, np.float32)  # T = 3 snapshots, the last equal to the adapter's B
    snapshots = save({"b_snapshots": rows, "shadow_snapshots": rows})
    return {
        "files": {"adapter": ("a", save(adapter(value))), "snapshots": ("s", snapshots)},
        "data": {"num_samples": "6", "batch_size": "2"},
    }


# A baseline rule, and a probed level aggregating with a robust rule (a level with FedAvg gates its own
# weighted mean, so the level's case slows the rule it hands the kept updates to).
@pytest.mark.parametrize(("defense", "rule"), [("fedavg", FedAvg), ("shadow", Median)])
def test_task_answers_while_a_slow_rule_aggregates(defense, rule, tmp_path, redis_client, free_port):
    spec = export_probe(tmp_path)
    service = aggregator_service(tmp_path, redis_client, aggregator_settings(defense=defense))
    service.strategy, aggregating = slow(rule)
    with ServerThread(create_app(service), free_port()) as server:
        http = httpx.Client(base_url=server.url, timeout=30)
        auth = {}
        for client in ("c0", "c1"):
            token = http.post("/v1/admin/enrollments", headers=ADMIN, json={"count": 1}).json()["tokens"][0]
            body = http.post("/v1/clients", json={"client_id": client, "enrollment_token": token}).json()
            auth[client] = {"x-client-id": client, "authorization": f"Bearer {body['token']}"}
        assert http.post("/v1/admin/rounds/0/open", headers=ADMIN).status_code == 200
        for client, value in (("c0", -0.5), ("c1", -0.25)):
            submitted = http.post(
                "/v1/rounds/0/updates", headers=auth[client], **_submission(value, spec.dim)
            )
            assert submitted.status_code == 202, submitted.text

        closed: list[httpx.Response] = []

        def close() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as own:
                closed.append(own.post("/v1/admin/rounds/0/close", headers=ADMIN))

        closer = threading.Thread(target=close)
        started = time.monotonic()
        closer.start()
        assert aggregating.wait(10), "the close never reached the aggregation rule"
        answered = time.monotonic()
        task = http.get("/v1/task", headers=auth["c0"])
        task_s = time.monotonic() - answered
        status = http.get("/v1/admin/rounds/0", headers=ADMIN)
        during_s = time.monotonic() - answered
        closer.join(30)
        close_s = time.monotonic() - started

    assert task_s < BOUND_S and during_s < BOUND_S, (task_s, during_s)
    assert task.status_code == 200 and task.json()["phase"] == "closing", task.text
    assert status.json()["phase"] == "closing"
    assert [u["client_id"] for u in status.json()["updates"]] == ["c0", "c1"]
    # the close really waited for the slow rule, and committed what it aggregated
    assert close_s >= SLOW_S and closed and closed[0].status_code == 200, closed
    summary = closed[0].json()
    assert summary["phase"] == "aggregated" and summary["weights"] == {"c0": 0.5, "c1": 0.5}, summary
    if defense == "shadow":  # the level scored both updates (benign: -B reads benign to the planted probe)
        assert set(summary["scores"]) == {"c0", "c1"} and all(
            p is not None for p in summary["scores"].values()
        )
