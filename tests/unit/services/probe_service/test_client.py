import subprocess
import sys

import httpx
import numpy as np
import pytest

from services.probe_service.client import (
    AsyncProbeServiceClient,
    ProbeServiceClient,
    ProbeServiceClientError,
    RetryPolicy,
)
from shared.safetensors_reader import read_tensors

OK = {"probe_id": "p", "threshold": 0.8, "feature_spec_version": "1", "results": [], "flagged": 0}


def _client(handler, cls=ProbeServiceClient):
    return cls(
        "http://probe", retry=RetryPolicy(attempts=3, backoff_s=0.0), transport=httpx.MockTransport(handler)
    )


def test_retries_unavailable_answers_then_succeeds_and_sends_safetensors():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503 if len(calls) < 3 else 200, json=OK)

    rows = np.arange(12, dtype=np.float32).reshape(2, 6)
    assert _client(handler).score_snapshots(rows, probe_id="p").probe_id == "p"
    assert len(calls) == 3
    last = calls[-1]
    assert last.url.path == "/v1/score/batch" and last.url.params["probe_id"] == "p"
    np.testing.assert_array_equal(read_tensors(last.content)["snapshots"], rows)


def test_client_errors_are_not_retried_and_carry_the_reason():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(422, json={"error": "invalid_update", "detail": "nan at index [0, 1]"})

    with pytest.raises(ProbeServiceClientError, match="422 invalid_update: nan") as error:
        _client(handler).score_adapter({"k": np.zeros(2)}, probe_id="p")
    assert error.value.status_code == 422 and len(calls) == 1


def test_the_last_unavailable_answer_is_reported():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="upstream gone")

    with pytest.raises(ProbeServiceClientError, match="503 error: upstream gone"):
        _client(handler).probes()


async def _async_call(handler):
    async with _client(handler, AsyncProbeServiceClient) as client:
        return await client.score_snapshots(np.zeros((1, 4)), base_model="m")


def test_async_client_retries_the_same_way():
    import asyncio

    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json=OK)

    assert asyncio.run(_async_call(handler)).flagged == 0
    assert len(calls) == 2 and calls[-1].url.params["base_model"] == "m"


def test_retry_after_from_the_server_sets_the_wait():
    from services.probe_service.client import retry_after

    policy = RetryPolicy(attempts=3, backoff_s=0.1, max_backoff_s=2.0)
    assert policy.delay(0) == 0.1 and policy.delay(5) == 2.0
    assert policy.delay(0, 3.0) == 3.0 and policy.delay(5, 0.5) == 2.0 and policy.delay(0, 1e9) == 30.0
    assert retry_after(httpx.Response(503, headers={"Retry-After": "2"})) == 2.0
    assert retry_after(httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) is None
    assert retry_after(httpx.Response(503)) is None and retry_after(None) is None


def test_the_client_is_a_light_wire_module():
    # Other FL frameworks import it: no server modules, no onnx/onnxruntime, no torch, no Ray.
    heavy = [
        "onnx",
        "onnxruntime",
        "torch",
        "ray",
        "services.probe_service.scoring",
        "services.probe_service.payloads",
    ]
    code = f"import sys, services.probe_service.client; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"
