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

# Imported (and assertion-rewritten by pytest) at collection: imported lazily by the first fuzz test after
# test_hostile_inputs.py ran in the same process, CPython 3.11.7's AST validator failed with "AST
# constructor recursion depth mismatch" (seen on main too).
from schemathesis.specs.openapi import schemas as _openapi_schemas  # noqa: E402, F401
from schemathesis.specs.openapi.checks import (  # noqa: E402
    response_schema_conformance,
    status_code_conformance,
)

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
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
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


def _hostile_json() -> st.SearchStrategy[bytes]:
    """JSON texts with what the schema-driven generator never sends: integers past Python's 4,300-digit
    limit and lone surrogates (valid JSON escapes, not encodable as UTF-8), as values and as keys."""
    huge = st.integers(4301, 6000).map(lambda n: b"-" * (n % 2) + b"9" * n)
    surrogate = st.sampled_from([b'"\\ud800"', b'"\\udfff"', b'"c\\udc80"', b'"\\ud83d"'])
    plain = st.sampled_from([b"1", b"-0.5", b"null", b"true", b'"c1"', b"[]", b"{}"])
    keys = st.sampled_from(
        [b'"client_id"', b'"enrollment_token"', b'"count"', b'"snapshots"', b'"probe_id"', b'"\\ud800"']
    )
    values = st.recursive(
        st.one_of(huge, surrogate, plain),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(lambda items: b"[" + b",".join(items) + b"]"),
            st.lists(st.tuples(keys, inner), max_size=4).map(
                lambda pairs: b"{" + b",".join(k + b":" + v for k, v in pairs) + b"}"
            ),
        ),
        max_leaves=8,
    )
    return st.lists(st.tuples(keys, values), min_size=1, max_size=4).map(
        lambda pairs: b"{" + b",".join(k + b":" + v for k, v in pairs) + b"}"
    )


def _hostile_json_fuzz(app, operations: list[tuple[str, dict]]) -> int:  # type: ignore[no-untyped-def]
    """POST hostile JSON to each operation: never a 5xx, only documented statuses, the documented body."""
    from fastapi.testclient import TestClient

    openapi = app.openapi()
    http = TestClient(app, raise_server_exceptions=False)
    calls = 0

    def fuzz(path: str, headers: dict) -> None:
        responses = openapi["paths"][path]["post"]["responses"]

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True)
        @given(body=_hostile_json())
        def run(body: bytes) -> None:
            nonlocal calls
            response = http.post(path, content=body, headers={"content-type": "application/json", **headers})
            assert response.status_code < 500, (path, response.status_code, response.text[:300])
            assert str(response.status_code) in responses, (path, response.status_code, response.text[:300])
            if response.status_code >= 400:  # a sentence or field errors, bounded: no input echoed whole
                assert isinstance(response.json().get("detail"), str | list), response.text[:300]
                assert len(response.text) < 4000 and "9999999999" not in response.text, response.text[:300]
            calls += 1

        run()

    for path, headers in operations:
        fuzz(path, headers)
    return calls


def test_hostile_json_fields_never_reach_a_server_error(registry, redis_client):
    service = aggregator_service(registry, redis_client, aggregator_settings(registration="open"))
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    operations = [("/v1/clients", {}), ("/v1/admin/enrollments", admin)]
    assert _hostile_json_fuzz(create_aggregator_app(service), operations) == 2 * EXAMPLES
    probe_operations = [("/v1/score/batch", {}), ("/v1/score", {})]
    assert _hostile_json_fuzz(probe_app(registry), probe_operations) == 2 * EXAMPLES
