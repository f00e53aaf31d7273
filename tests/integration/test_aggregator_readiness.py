"""Aggregator readiness follows its Redis (real redis-server, real HTTP); /docs and /metrics can close."""

from __future__ import annotations

import httpx
import pytest

from services.aggregator.api.app import create_app
from tests.integration.hostile_apps import (
    ServerThread,
    aggregator_service,
    aggregator_settings,
    export_probe,
)


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    root = tmp_path_factory.mktemp("probes")
    export_probe(root)
    return root


def test_readyz_fails_while_redis_is_down_and_recovers(probes, redis_server, redis_client, free_port):
    service = aggregator_service(probes, redis_client, aggregator_settings())
    with ServerThread(create_app(service), free_port()) as server, httpx.Client(base_url=server.url) as http:
        ready = http.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        redis_server.kill()
        try:
            down = http.get("/readyz", timeout=10)
            assert (down.status_code, down.json()) == (
                503,
                {"status": "unavailable", "detail": "state store unavailable: ConnectionError"},
            )
            # Liveness is the process, not its store: a Redis outage must not restart the aggregator.
            assert http.get("/healthz").status_code == 200
        finally:
            redis_server.start()
        assert http.get("/readyz").status_code == 200


@pytest.mark.parametrize(("docs", "metrics"), [(True, True), (False, False), (False, True)])
def test_docs_and_metrics_can_be_closed(probes, redis_client, free_port, docs, metrics):
    settings = aggregator_settings(expose_docs=docs, expose_metrics=metrics)
    service = aggregator_service(probes, redis_client, settings)
    with ServerThread(create_app(service), free_port()) as server, httpx.Client(base_url=server.url) as http:
        paths = ("/docs", "/redoc", "/openapi.json", "/metrics")
        codes = {path: http.get(path).status_code for path in paths}
        assert codes == {
            "/docs": 200 if docs else 404,
            "/redoc": 200 if docs else 404,
            "/openapi.json": 200 if docs else 404,
            "/metrics": 200 if metrics else 404,
        }
        assert http.get("/readyz").status_code == 200
