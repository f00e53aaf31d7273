"""Bounded schema fuzzing (schemathesis) of both services' OpenAPI: no 5xx, only documented statuses.

Every operation gets a fixed number of generated requests (positive and negative data); client and operator
routes are fuzzed with valid credentials too, so generated bodies and parameters reach the handlers rather
than stopping at authentication. The aggregator runs on a real redis-server.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import status_code_conformance  # noqa: E402

from services.aggregator.api.app import create_app as create_aggregator_app  # noqa: E402
from tests.integration.hostile_apps import (  # noqa: E402
    ADMIN_TOKEN,
    aggregator_service,
    aggregator_settings,
    export_probe,
    probe_app,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EXAMPLES = 40  # per operation: bounded, a few seconds per service
CHECKS = [not_a_server_error, status_code_conformance]
MIN_CALLS = 100  # operations with a small input space (healthz) exhaust it before EXAMPLES


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("probes")
    export_probe(root)
    return root


def _fuzz(schema, prepare) -> int:  # type: ignore[no-untyped-def]
    calls = 0
    for operation in schema.get_all_operations():
        op = operation.ok()
        modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
        strategies = []
        for mode in modes:
            try:
                strategies.append(op.as_strategy(generation_mode=mode))
            except Exception:  # an operation without negative space (no parameters): positive only
                continue

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        @given(case=st.one_of(strategies))
        def run(case) -> None:  # type: ignore[no-untyped-def]
            nonlocal calls
            prepare(case)
            case.call_and_validate(checks=CHECKS)
            calls += 1

        run()
    return calls


def test_probe_service_schema_fuzz(registry):
    schema = schemathesis.openapi.from_asgi("/openapi.json", probe_app(registry))
    assert _fuzz(schema, lambda case: None) >= MIN_CALLS


def test_aggregator_schema_fuzz(registry, redis_client):
    service = aggregator_service(registry, redis_client, aggregator_settings(registration="open"))
    token = service.register("fuzz-client")
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_aggregator_app(service))
    turn = iter(range(10**9))

    def with_credentials(case) -> None:  # type: ignore[no-untyped-def]
        # Every other case gets valid credentials: the handlers and the auth checks are both fuzzed.
        if next(turn) % 2:
            return
        headers = dict(case.headers or {})
        if case.path.startswith("/v1/admin"):
            headers["authorization"] = f"Bearer {ADMIN_TOKEN}"
        else:
            headers.update({"authorization": f"Bearer {token}", "x-client-id": "fuzz-client"})
        case.headers = headers

    assert _fuzz(schema, with_credentials) >= MIN_CALLS
