"""A committed corpus of hostile requests against both services over real HTTP: never a 5xx, always the
documented error shape, every status listed in the route's OpenAPI, and the reason named.

The classes are issue 10's: safetensors headers (nested 100k deep, dtype as a list, a 2^70 dimension, a
size that wraps int64), pickle / torch zip / gzip bodies, deep JSON bodies and adapter_config.json, wrongly
typed fields, 0-row snapshots, truncated multipart, non-ASCII operator tokens, bodies over the limit
(declared and streamed), claims above the task's bounds, and Redis down (503 with Retry-After); and issue
23's: integers past Python's 4,300-digit limit in every JSON the services parse, lone surrogates in JSON
fields, ids echoed only up to a bound, a submission refused on its headers before its body is read, and
Redis killed at each store call of the download, submission and close paths (503, never 404 or 409).
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import socket
import struct
import time
import zipfile

import httpx
import numpy as np
import pytest
from safetensors.numpy import save

from services.aggregator.api.app import create_app as create_aggregator_app
from services.aggregator.api.errors import ErrorDetail, InvalidRequest
from tests.integration.hostile_apps import (
    ADMIN_TOKEN,
    PROBE_ID,
    ServerThread,
    adapter,
    aggregator_service,
    aggregator_settings,
    export_probe,
    probe_app,
)

pytestmark = pytest.mark.integration
OCTET = {"content-type": "application/octet-stream"}
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def _header_blob(header: dict | bytes, data: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": [1.0]}))
    return buffer.getvalue()


DEEP_HEADER = _header_blob(b'{"w":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
LIST_DTYPE = _header_blob({"w": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4)
HUGE_DIM = _header_blob({"w": {"dtype": "F32", "shape": [2**70], "data_offsets": [0, 4]}}, b"\0" * 4)
WRAPS = _header_blob({"w": {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]}})
PICKLE = pickle.dumps({"w": np.zeros(3, np.float32)})
ZIP, GZIP = _zip(), gzip.compress(save(adapter()))
HUGE_INT = b"9" * 5000  # past Python's int-from-string limit (4,300 digits): a plain ValueError in json
BIG_INT_HEADER = _header_blob(
    b'{"w":{"dtype":"F32","shape":[' + HUGE_INT + b'],"data_offsets":[0,4]}}', b"\0" * 4
)
SURROGATE_NAME = _header_blob(b'{"\\ud800":{"dtype":"X","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4)
SAFETENSORS_CASES = [
    ("deep-header", DEEP_HEADER, "nested"),
    ("dtype-list", LIST_DTYPE, "dtype must be a string"),
    ("dim-2^70", HUGE_DIM, "2^40"),
    ("size-wraps", WRAPS, "expected 73786976294838206464"),
    ("pickle", PICKLE, "a pickle"),
    ("torch-zip", ZIP, "zip archive"),
    ("gzip", GZIP, "gzip"),
    ("int-5000-digits", BIG_INT_HEADER, "4300 digits"),
]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("probes")
    return root, export_probe(root)


@pytest.fixture(scope="module")
def probe_server(registry, free_port):
    with ServerThread(
        probe_app(registry[0], max_body_bytes=256 * 1024, max_json_body_bytes=64 * 1024), free_port()
    ) as s:
        yield s


@pytest.fixture
def aggregator(registry, redis_client, free_port):
    service = aggregator_service(registry[0], redis_client, aggregator_settings())
    app = create_aggregator_app(service)
    with ServerThread(app, free_port()) as server:
        yield server, app.openapi()


def _documented(openapi: dict, response: httpx.Response, route: str) -> None:
    """No 5xx except the documented 503; the status is in the route's OpenAPI; the body is the documented
    error model (the aggregator's {"detail"} models; the probe service's {"error", "detail"})."""
    method = response.request.method.lower()
    statuses = openapi["paths"][route][method]["responses"]
    assert str(response.status_code) in statuses, (route, response.status_code, response.text)
    assert response.status_code < 500 or response.status_code == 503, response.text
    if response.status_code >= 400:
        assert isinstance(response.json()["detail"], str | list), response.text
        schema = statuses[str(response.status_code)]["content"]["application/json"]["schema"]
        model = {"ErrorDetail": ErrorDetail, "InvalidRequest": InvalidRequest}.get(
            schema.get("$ref", "").rsplit("/", 1)[-1]
        )
        if "ErrorResponse" not in str(schema):  # the probe service's model is checked by _probe_error
            assert model is not None, (route, response.status_code, schema)
            model.model_validate(response.json())


def _probe_error(openapi: dict, response: httpx.Response, status: int, needle: str, route: str) -> None:
    assert response.status_code == status, response.text
    _documented(openapi, response, route)
    body = response.json()
    assert set(body) == {"error", "detail"} and needle in body["detail"], body


@pytest.mark.parametrize(("name", "blob", "needle"), SAFETENSORS_CASES, ids=[c[0] for c in SAFETENSORS_CASES])
def test_probe_service_names_what_is_wrong_with_a_body(probe_server, name, blob, needle):
    http = httpx.Client(base_url=probe_server.url, timeout=30)
    openapi = http.get("/openapi.json").json()
    response = http.post("/v1/score", content=blob, headers=OCTET, params={"probe_id": PROBE_ID})
    _probe_error(openapi, response, 422, needle, "/v1/score")


def test_probe_service_json_config_multipart_limits_and_model_names(probe_server, registry):
    _, spec = registry
    http = httpx.Client(base_url=probe_server.url, timeout=30)
    openapi = http.get("/openapi.json").json()
    post = http.post
    cases = [
        (
            post("/v1/score/batch", content=b"[" * 50_000, headers={"content-type": "application/json"}),
            422,
            "nested 50000",
        ),
        (
            post("/v1/score/batch", json={"snapshots": [[0.1] * spec.dim], "probe_id": ["x"]}),
            422,
            "probe_id must be a string",
        ),
        (
            post("/v1/score/batch", json={"snapshots": [["a"] * spec.dim], "base_model": "smollm2-135m"}),
            422,
            "list of numbers",
        ),
        (
            post(
                "/v1/score",
                content=save({"snapshots": np.zeros((0, spec.dim), np.float32)}),
                headers=OCTET,
                params={"probe_id": PROBE_ID},
            ),
            422,
            "0 snapshot rows",
        ),
        (
            post(
                "/v1/score",
                files={
                    "adapter": ("a", save(adapter())),
                    "config": ("c", b'{"r":' * 10_000 + b"2" + b"}" * 10_000),
                },
            ),
            422,
            "nested",
        ),
        (
            post(
                "/v1/score",
                files={"adapter": ("a", save(adapter())), "config": ("c", b'{"target_modules": [1, 2]}')},
            ),
            422,
            "list of strings",
        ),
        (
            post(
                "/v1/score",
                files={"adapter": ("a", save(adapter())), "config": ("c", b'{"base_model_name_or_path": 3}')},
            ),
            422,
            "must be a string",
        ),
        (
            post(
                "/v1/score",
                params={"probe_id": PROBE_ID},
                content=save(adapter(0.1, ("q_proj", "k_proj", "v_proj", "o_proj"))),
                headers=OCTET,
            ),
            422,
            "was trained for r=2, targets ['q_proj', 'v_proj']",
        ),
        (
            post("/v1/score", params={"base_model": "llama-8b"}, content=save(adapter()), headers=OCTET),
            404,
            "probe build --model <name or checkpoint directory>",
        ),
        (
            post(
                "/v1/score/batch",
                content=b"{" + b" " * (70 * 1024) + b"}",
                headers={"content-type": "application/json"},
            ),
            413,
            "exceeds the limit of 65536",
        ),
        (
            post(
                "/v1/score",
                params={"r": "-3", "base_model": "smollm2-135m"},
                content=save(adapter()),
                headers=OCTET,
            ),
            422,
            "positive integer",
        ),
    ]
    for response, status, needle in cases:
        route = response.request.url.path
        _probe_error(openapi, response, status, needle, route)

    # a streamed (chunked, no Content-Length) body is cut off at the limit, not received whole
    def chunks():
        for _ in range(64):
            yield b"\0" * 64 * 1024

    streamed = post("/v1/score", content=chunks(), headers=OCTET)
    _probe_error(openapi, streamed, 413, "exceeds the limit", "/v1/score")
    # a truncated multipart body says so instead of asking to name the probe
    request = http.build_request("POST", "/v1/score", files={"adapter": ("a", save(adapter()))})
    body = request.read()
    truncated = post(
        "/v1/score", content=body[: len(body) // 2], headers={"content-type": request.headers["content-type"]}
    )
    _probe_error(openapi, truncated, 422, "truncated", "/v1/score")
    # the hub id and the zoo name find the same probe
    for name in ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m"):
        found = post("/v1/score", params={"base_model": name}, content=save(adapter(-0.5)), headers=OCTET)
        assert found.status_code == 200 and found.json()["probe_id"] == PROBE_ID, found.text


def test_probe_service_refuses_huge_integers_and_lone_surrogates_and_bounds_echoed_ids(
    probe_server, registry
):
    _, spec = registry
    http = httpx.Client(base_url=probe_server.url, timeout=30)
    openapi = http.get("/openapi.json").json()
    json_type = {"content-type": "application/json"}
    row = b"[" + b",".join([b"0.1"] * spec.dim) + b"]"
    cases = [
        (  # a JSON body: an integer past the digit limit
            http.post("/v1/score/batch", content=b'{"snapshots": [[' + HUGE_INT + b"]]}", headers=json_type),
            422,
            "4300 digits",
        ),
        (  # adapter_config.json: the same
            http.post(
                "/v1/score",
                files={"adapter": ("a", save(adapter())), "config": ("c", b'{"r": ' + HUGE_INT + b"}")},
            ),
            422,
            "4300 digits",
        ),
        (  # a safetensors tensor named by a lone surrogate: named back escaped, never a 500
            http.post("/v1/score", content=SURROGATE_NAME, headers=OCTET, params={"probe_id": PROBE_ID}),
            422,
            "\\ud800",
        ),
        (  # a lone surrogate as the probe id: 404, escaped
            http.post(
                "/v1/score/batch",
                content=b'{"snapshots": [' + row + b'], "probe_id": "\\ud800"}',
                headers=json_type,
            ),
            404,
            "\\ud800",
        ),
        (  # a 20,000-character probe id is named back cut to 64 characters
            http.post("/v1/score/batch", json={"snapshots": [[0.1] * spec.dim], "probe_id": "p" * 20_000}),
            404,
            "(20000 characters)",
        ),
    ]
    for response, status, needle in cases:
        _probe_error(openapi, response, status, needle, response.request.url.path)
        assert len(response.json()["detail"]) < 1000, len(response.json()["detail"])


def _submission(
    value: float,
    dim: int,
    steps: int = 3,
    num_samples: int = 6,
    batch: int = 2,
    adapter_blob: bytes | None = None,
) -> dict:
    snapshots = {
        "b_snapshots": np.full((steps, dim), value, np.float32),
        "shadow_snapshots": np.full((steps, dim), value, np.float32),
    }
    return {
        "files": {
            "adapter": ("a", adapter_blob or save(adapter(value))),
            "snapshots": ("s", save(snapshots)),
        },
        "data": {"num_samples": str(num_samples), "batch_size": str(batch)},
    }


def test_aggregator_refuses_hostile_requests_with_documented_answers(aggregator, registry, redis_server):
    (server, openapi), (_, spec) = aggregator, registry
    http = httpx.Client(base_url=server.url, timeout=30)
    enroll = http.post("/v1/admin/enrollments", headers=ADMIN, json={"count": 2, "client_id": None}).json()[
        "tokens"
    ]
    token = http.post("/v1/clients", json={"client_id": "c0", "enrollment_token": enroll[0]}).json()["token"]
    auth = {"x-client-id": "c0", "authorization": f"Bearer {token}"}
    assert http.post("/v1/admin/rounds/0/open", headers=ADMIN).status_code == 200
    updates = "/v1/rounds/{round_index}/updates"

    def submit(headers: dict | None = None, **kwargs) -> httpx.Response:
        return http.post("/v1/rounds/0/updates", headers={**auth, **(headers or {})}, **kwargs)

    cases = [
        (
            http.post(
                "/v1/clients",
                content=b'{"client_id":' + b"[" * 30_000 + b"]" * 30_000 + b"}",
                headers={"content-type": "application/json"},
            ),
            "/v1/clients",
            422,
            "nested 30001",
        ),
        (
            http.post("/v1/clients", json={"client_id": ["c1"], "enrollment_token": enroll[1]}),
            "/v1/clients",
            422,
            "",
        ),
        (
            http.post("/v1/clients", json={"client_id": "c1", "enrollment_token": "forged"}),
            "/v1/clients",
            403,
            "unknown enrollment token",
        ),
        (http.post("/v1/clients", json={"client_id": "c1"}), "/v1/clients", 401, "enrollment_token"),
        (
            http.get("/v1/admin/trust", headers={"authorization": "Bearer caf\u00e9-\u00fc".encode()}),
            "/v1/admin/trust",
            403,
            "wrong operator token",
        ),
        (http.get("/v1/admin/trust"), "/v1/admin/trust", 401, "missing bearer"),
        (
            http.post("/v1/admin/rounds/-1/open", headers=ADMIN),
            "/v1/admin/rounds/{round_index}/open",
            422,
            "",
        ),
        (
            http.post(f"/v1/admin/rounds/{2**70}/open", headers=ADMIN),
            "/v1/admin/rounds/{round_index}/open",
            422,
            "",
        ),
        (http.get("/v1/global/99", headers=auth), "/v1/global/{version}", 404, "no global version 99"),
        (
            submit(**_submission(-0.5, spec.dim, num_samples=10**15)),
            updates,
            422,
            "num_samples 1000000000000000 > the task's subset of 6",
        ),
        (submit(**_submission(-0.5, spec.dim, batch=1)), updates, 422, "batch_size 1 != the task's 2"),
        (submit(**_submission(-0.5, spec.dim, steps=30)), updates, 422, "30 rows, the task has 3"),
        (submit(**_submission(-0.5, spec.dim, adapter_blob=PICKLE)), updates, 422, "a pickle"),
        (submit(**_submission(-0.5, spec.dim, adapter_blob=GZIP)), updates, 422, "gzip"),
        (submit(**_submission(-0.5, spec.dim, adapter_blob=ZIP)), updates, 422, "zip archive"),
        (submit(**_submission(-0.5, spec.dim, adapter_blob=DEEP_HEADER)), updates, 422, "nested"),
        (submit(**_submission(-0.5, spec.dim, adapter_blob=WRAPS)), updates, 422, "expected 7378697629"),
        (
            submit(
                content=b"\0" * (4 * 1024 * 1024),
                headers={"content-type": "multipart/form-data; boundary=x"},
            ),
            updates,
            413,
            "exceeds the limit",
        ),
    ]
    for response, route, status, needle in cases:
        assert response.status_code == status, (route, response.text)
        _documented(openapi, response, route)
        assert needle in str(response.json()["detail"]), response.text

    def chunks():  # a well-formed part of 12.8 MB, chunked: refused once 2 x 1 MiB + overhead has arrived
        yield b'--x\r\nContent-Disposition: form-data; name="adapter"; filename="a"\r\n\r\n'
        for _ in range(200):
            yield b"\0" * 64 * 1024

    start = time.perf_counter()
    streamed = submit(content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert streamed.status_code == 413 and time.perf_counter() - start < 10, streamed.text
    _documented(openapi, streamed, updates)
    assert submit(**_submission(-0.5, spec.dim)).status_code == 202  # the honest update still goes in

    redis_server.kill()  # Redis down: 503 with Retry-After, never a bare 500
    try:
        for response, route in (
            (http.get("/v1/task", headers=auth), "/v1/task"),
            (
                http.post("/v1/clients", json={"client_id": "c2", "enrollment_token": enroll[1]}),
                "/v1/clients",
            ),
            (submit(**_submission(-0.5, spec.dim)), updates),
        ):
            assert response.status_code == 503 and response.headers["retry-after"] == "2", response.text
            _documented(openapi, response, route)
    finally:
        redis_server.start()


@pytest.fixture
def aggregator_app(registry, redis_client, free_port):
    service = aggregator_service(registry[0], redis_client, aggregator_settings())
    app = create_aggregator_app(service)
    with ServerThread(app, free_port()) as server:
        yield server, app


def _client(http: httpx.Client, client_id: str = "c0") -> dict[str, str]:
    enrollment = http.post("/v1/admin/enrollments", headers=ADMIN, json={"count": 1}).json()["tokens"][0]
    registered = http.post("/v1/clients", json={"client_id": client_id, "enrollment_token": enrollment})
    return {"x-client-id": client_id, "authorization": f"Bearer {registered.json()['token']}"}


def test_aggregator_refuses_huge_integers_and_lone_surrogates_and_bounds_echoed_ids(aggregator, registry):
    (server, openapi), (_, spec) = aggregator, registry
    http = httpx.Client(base_url=server.url, timeout=30)
    auth = _client(http)
    assert http.post("/v1/admin/rounds/0/open", headers=ADMIN).status_code == 200
    updates = "/v1/rounds/{round_index}/updates"
    json_type = {"content-type": "application/json"}

    def submit(headers: dict | None = None, **kwargs) -> httpx.Response:
        return http.post("/v1/rounds/0/updates", headers={**auth, **(headers or {})}, **kwargs)

    huge_claim = _submission(-0.5, spec.dim)
    huge_claim["data"]["num_samples"] = HUGE_INT.decode()
    cases = [
        (
            http.post("/v1/clients", content=b'{"client_id": "\\ud800"}', headers=json_type),
            "/v1/clients",
            422,
            "client_id",
        ),
        (
            http.post(
                "/v1/clients",
                content=b'{"client_id": "c9", "enrollment_token": "\\udfff"}',
                headers=json_type,
            ),
            "/v1/clients",
            422,
            "enrollment_token",
        ),
        (
            http.post("/v1/clients", content=b'{"client_id": ' + HUGE_INT + b"}", headers=json_type),
            "/v1/clients",
            422,
            "malformed request body",
        ),
        (
            http.post(
                "/v1/admin/enrollments",
                content=b'{"count": 1, "client_id": "\\ud800"}',
                headers={**json_type, **ADMIN},
            ),
            "/v1/admin/enrollments",
            422,
            "client_id",
        ),
        (
            http.post(
                "/v1/admin/enrollments",
                content=b'{"count": ' + HUGE_INT + b"}",
                headers={**json_type, **ADMIN},
            ),
            "/v1/admin/enrollments",
            422,
            "malformed request body",
        ),
        (http.get("/v1/global/" + HUGE_INT.decode(), headers=auth), "/v1/global/{version}", 422, "version"),
        (submit(**huge_claim), updates, 422, "num_samples"),
        (submit(**_submission(-0.5, spec.dim, adapter_blob=BIG_INT_HEADER)), updates, 422, "4300 digits"),
        (submit(**_submission(-0.5, spec.dim, adapter_blob=SURROGATE_NAME)), updates, 422, "\\ud800"),
        (  # a 10,000-character client id with a forged token: named back cut to 64 characters
            submit(
                headers={"x-client-id": "x" * 10_000, "authorization": "Bearer forged"},
                **_submission(-0.5, spec.dim),
            ),
            updates,
            403,
            "(10000 characters)",
        ),
        (
            http.get("/v1/task", headers={"x-client-id": "x" * 10_000, "authorization": "Bearer forged"}),
            "/v1/task",
            403,
            "(10000 characters)",
        ),
    ]
    for response, route, status, needle in cases:
        assert response.status_code == status, (route, response.text[:300])
        _documented(openapi, response, route)
        assert needle in str(response.json()["detail"]), response.text[:300]
        assert len(response.text) < 2000, (route, len(response.text))  # no input echoed whole
        assert "9999999999" not in response.text  # the huge integers are never echoed back
    assert submit(**_submission(-0.5, spec.dim)).status_code == 202  # the honest update still goes in


def _raw_post(port: int, headers: dict[str, str], declared: int, sent: bytes) -> tuple[bytes, float]:
    """POST a submission declaring `declared` body bytes but sending only `sent`; the answer and its time."""
    lines = ["POST /v1/rounds/0/updates HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {declared}"]
    lines += ["Content-Type: multipart/form-data; boundary=x", *(f"{k}: {v}" for k, v in headers.items())]
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + sent)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            pass  # the server still waits for the body: the answer stays empty
    return answer, time.perf_counter() - start


def test_a_submission_is_authenticated_before_its_body_is_read(aggregator):
    server, _ = aggregator
    port = int(server.url.rsplit(":", 1)[1])
    declared = 2 * 1024 * 1024  # within the route's limit (2 x 1 MiB + 1 MiB): the body limit does not refuse
    sent = b'--x\r\nContent-Disposition: form-data; name="adapter"; filename="a"\r\n\r\n' + b"\0" * 65_536
    for headers, status in (
        ({}, b"401"),
        ({"X-Client-Id": "c0"}, b"401"),
        ({"X-Client-Id": "c0", "Authorization": "Bearer forged"}, b"403"),
    ):
        # 64 KiB of a declared 2 MiB were sent: an answer at all proves the rest was never waited for
        answer, seconds = _raw_post(port, headers, declared, sent)
        assert answer.split(b" ", 2)[1:2] == [status], answer[:200]
        assert seconds < 5 and b"connection: close" in answer.lower(), (seconds, answer[:300])


def test_redis_killed_at_each_store_call_answers_503_never_404_or_409(aggregator_app, registry, redis_server):
    (server, app), (_, spec) = aggregator_app, registry
    openapi, store = app.openapi(), app.state.service.store
    http = httpx.Client(base_url=server.url, timeout=60)
    auth = _client(http)
    assert http.post("/v1/admin/rounds/0/open", headers=ADMIN).status_code == 200
    updates, close = "/v1/rounds/{round_index}/updates", "/v1/admin/rounds/{round_index}/close"

    def submit() -> httpx.Response:
        return http.post("/v1/rounds/0/updates", headers=auth, **_submission(-0.5, spec.dim))

    def killed_at(method: str, call):  # type: ignore[no-untyped-def]
        """Run `call` with Redis SIGKILLed the moment the service reaches store.<method>."""
        original = getattr(store, method)

        def kill_then_call(*args, **kwargs):  # type: ignore[no-untyped-def]
            redis_server.kill()
            return original(*args, **kwargs)

        setattr(store, method, kill_then_call)
        try:
            return call()
        finally:
            delattr(store, method)
            redis_server.start()  # AOF (fsync always): everything acknowledged before the kill is back

    cases = [
        ("global_blob", lambda: http.get("/v1/admin/global/0", headers=ADMIN), "/v1/admin/global/{version}"),
        ("global_blob", lambda: http.get("/v1/global/0", headers=auth), "/v1/global/{version}"),
        ("add_update", submit, updates),
        ("begin_close", lambda: http.post("/v1/admin/rounds/0/close", headers=ADMIN), close),
        ("close_round", lambda: http.post("/v1/admin/rounds/0/close", headers=ADMIN), close),
    ]
    for method, call, route in cases:
        response = killed_at(method, call)
        assert response.status_code == 503 and response.headers["retry-after"] == "2", (method, response.text)
        _documented(openapi, response, route)
        if method == "add_update":  # the client retries as told, and the update goes in
            assert submit().status_code == 202
    # the close that died before its commit left the round closing; the next close finishes it
    assert store.get_round(0).phase.value == "closing"
    closed = http.post("/v1/admin/rounds/0/close", headers=ADMIN)
    assert closed.status_code == 200 and closed.json()["weights"] == {"c0": 1.0}, closed.text
    assert [(a.client_id, a.decision) for a in store.decision_log()] == [("c0", "aggregated")]
