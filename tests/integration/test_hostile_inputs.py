"""A committed corpus of hostile requests against both services over real HTTP: never a 5xx, always the
documented error shape, every status listed in the route's OpenAPI, and the reason named.

The classes are issue 10's: safetensors headers (nested 100k deep, dtype as a list, a 2^70 dimension, a
size that wraps int64), pickle / torch zip / gzip bodies, deep JSON bodies and adapter_config.json, wrongly
typed fields, 0-row snapshots, truncated multipart, non-ASCII operator tokens, bodies over the limit
(declared and streamed), claims above the task's bounds, and Redis down (503 with Retry-After).
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import time
import zipfile

import httpx
import numpy as np
import pytest
from safetensors.numpy import save

from services.aggregator.api.app import create_app as create_aggregator_app
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
SAFETENSORS_CASES = [
    ("deep-header", DEEP_HEADER, "nested"),
    ("dtype-list", LIST_DTYPE, "dtype must be a string"),
    ("dim-2^70", HUGE_DIM, "2^40"),
    ("size-wraps", WRAPS, "expected 73786976294838206464"),
    ("pickle", PICKLE, "a pickle"),
    ("torch-zip", ZIP, "zip archive"),
    ("gzip", GZIP, "gzip"),
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
    """No 5xx except the documented 503; the status is in the route's OpenAPI; the error shape holds."""
    method = response.request.method.lower()
    statuses = openapi["paths"][route][method]["responses"]
    assert str(response.status_code) in statuses, (route, response.status_code, response.text)
    assert response.status_code < 500 or response.status_code == 503, response.text
    if response.status_code >= 400:
        assert isinstance(response.json()["detail"], str | list), response.text


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
            "a zoo model (smollm2-135m, tiny-llama)",
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
