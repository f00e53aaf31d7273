"""Python clients of the probe service (sync and async), with timeouts and retries.

Used by the aggregator outside Ray and usable from any FL framework. Requests are built once
(`ScoreRequests`) and sent by either client; 4xx answers are not retried, connection errors and 429/5xx
are, with exponential backoff.

    client = ProbeServiceClient("http://127.0.0.1:8000")
    verdict = client.score_snapshots(deltas, probe_id="smollm2-135m-qv-r8")   # [T, 6144] -> T results
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
from pydantic import BaseModel
from safetensors.numpy import save as save_safetensors

from probes.manifest import ProbeManifest
from services.probe_service.schemas import SNAPSHOTS_TENSOR, BatchScoreResponse, ProbeInfo, ScoreResponse

Model = TypeVar("Model", bound=BaseModel)
RETRY_STATUSES = frozenset({429, 502, 503, 504})


class ProbeServiceClientError(RuntimeError):
    def __init__(self, status_code: int, code: str, detail: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{status_code} {code}: {detail}")
        self.status_code, self.code, self.detail = status_code, code, detail
        self.retry_after_s = retry_after_s  # the server's Retry-After (503, 429), when it sent one


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    backoff_s: float = 0.1
    max_backoff_s: float = 2.0

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Exponential backoff, or the server's Retry-After when it asked for longer (up to 30 s)."""
        backoff = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        return max(backoff, min(retry_after_s or 0.0, 30.0))

    def again(self, attempt: int, status: int | None) -> bool:
        """Retry after this attempt? status None: the connection failed."""
        retryable = status is None or status in RETRY_STATUSES
        return retryable and attempt < self.attempts - 1


@dataclass
class _Request:
    method: str
    path: str
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None

    def arguments(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "url": self.path,
            "content": self.content,
            "headers": self.headers,
            "params": self.params,
            "files": self.files,
        }


class ScoreRequests:
    """Builds the HTTP requests of the API (shared by the sync and async clients)."""

    @staticmethod
    def snapshots(
        snapshots: np.ndarray, probe_id: str | None, base_model: str | None, batch: bool = True
    ) -> _Request:
        body = save_safetensors({SNAPSHOTS_TENSOR: np.ascontiguousarray(snapshots, dtype=np.float32)})
        return _Request(
            "POST",
            "/v1/score/batch" if batch else "/v1/score",
            content=body,
            headers={"content-type": "application/octet-stream"},
            params=_selector(probe_id, base_model),
        )

    @staticmethod
    def adapter(
        adapter: Mapping[str, np.ndarray] | bytes,
        probe_id: str | None = None,
        base_model: str | None = None,
        r: int | None = None,
        target_modules: tuple[str, ...] | None = None,
        reference: Mapping[str, np.ndarray] | bytes | None = None,
    ) -> _Request:
        params = _selector(probe_id, base_model)
        if r is not None:
            params["r"] = str(r)
        if target_modules:
            params["target_modules"] = ",".join(target_modules)
        if reference is None:
            return _Request(
                "POST",
                "/v1/score",
                content=_safetensors(adapter),
                headers={"content-type": "application/octet-stream"},
                params=params,
            )
        files = [
            ("adapter", ("adapter_model.safetensors", _safetensors(adapter), "application/octet-stream")),
            ("reference", ("reference.safetensors", _safetensors(reference), "application/octet-stream")),
        ]
        return _Request("POST", "/v1/score", params=params, files=files)

    @staticmethod
    def adapter_dirs(directories: list[Path], probe_id: str | None = None) -> _Request:
        """PEFT `save_pretrained` directories (one config, taken from the first, describes them all)."""
        files = [
            ("adapter", ("adapter_model.safetensors", (d / "adapter_model.safetensors").read_bytes(), "x"))
            for d in directories
        ]
        config = (directories[0] / "adapter_config.json").read_bytes()
        files.append(("config", ("adapter_config.json", config, "application/json")))
        path = "/v1/score" if len(directories) == 1 else "/v1/score/batch"
        return _Request("POST", path, params=_selector(probe_id, None), files=files)


class _Client:
    _transport: type[httpx.Client] | type[httpx.AsyncClient]

    def __init__(
        self, base_url: str, timeout_s: float = 10.0, retry: RetryPolicy | None = None, **httpx_options: Any
    ) -> None:
        self._http = self._transport(base_url=base_url, timeout=timeout_s, **httpx_options)
        self.retry = retry or RetryPolicy()


class ProbeServiceClient(_Client):
    _transport = httpx.Client
    _http: httpx.Client

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ProbeServiceClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def score_snapshots(
        self, snapshots: np.ndarray, probe_id: str | None = None, base_model: str | None = None
    ) -> BatchScoreResponse:
        return self._send(ScoreRequests.snapshots(snapshots, probe_id, base_model), BatchScoreResponse)

    def score_adapter(self, adapter: Mapping[str, np.ndarray] | bytes, **selector: Any) -> ScoreResponse:
        return self._send(ScoreRequests.adapter(adapter, **selector), ScoreResponse)

    def score_adapter_dir(self, directory: Path, probe_id: str | None = None) -> ScoreResponse:
        return self._send(ScoreRequests.adapter_dirs([directory], probe_id), ScoreResponse)

    def score_adapter_dirs(self, directories: list[Path], probe_id: str | None = None) -> BatchScoreResponse:
        return self._send(ScoreRequests.adapter_dirs(directories, probe_id), BatchScoreResponse)

    def probes(self) -> list[ProbeInfo]:
        return [ProbeInfo.model_validate(p) for p in self._json(_Request("GET", "/v1/probes"))]

    def probe(self, probe_id: str) -> ProbeManifest:
        return ProbeManifest.model_validate(self._json(_Request("GET", f"/v1/probes/{probe_id}")))

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def _send(self, request: _Request, model: type[Model]) -> Model:
        return model.model_validate(self._json(request))

    def _json(self, request: _Request) -> Any:
        for attempt in range(self.retry.attempts):
            response = None
            try:
                response = self._http.request(**request.arguments())
            except httpx.TransportError:
                if not self.retry.again(attempt, None):
                    raise
            else:
                if not self.retry.again(attempt, response.status_code):
                    return _checked(response)
            time.sleep(self.retry.delay(attempt, retry_after(response)))
        raise AssertionError("unreachable")


class AsyncProbeServiceClient(_Client):
    _transport = httpx.AsyncClient
    _http: httpx.AsyncClient

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncProbeServiceClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def score_snapshots(
        self, snapshots: np.ndarray, probe_id: str | None = None, base_model: str | None = None
    ) -> BatchScoreResponse:
        request = ScoreRequests.snapshots(snapshots, probe_id, base_model)
        return BatchScoreResponse.model_validate(await self._json(request))

    async def score_adapter(
        self, adapter: Mapping[str, np.ndarray] | bytes, **selector: Any
    ) -> ScoreResponse:
        return ScoreResponse.model_validate(await self._json(ScoreRequests.adapter(adapter, **selector)))

    async def ready(self) -> bool:
        try:
            return (await self._http.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    async def _json(self, request: _Request) -> Any:
        for attempt in range(self.retry.attempts):
            response = None
            try:
                response = await self._http.request(**request.arguments())
            except httpx.TransportError:
                if not self.retry.again(attempt, None):
                    raise
            else:
                if not self.retry.again(attempt, response.status_code):
                    return _checked(response)
            await asyncio.sleep(self.retry.delay(attempt, retry_after(response)))
        raise AssertionError("unreachable")


def _checked(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json()
    try:
        body = response.json()
        code, detail = body.get("error", "error"), body.get("detail", response.text)
    except ValueError:
        code, detail = "error", response.text
    raise ProbeServiceClientError(response.status_code, code, str(detail), retry_after(response))


def retry_after(response: httpx.Response | None) -> float | None:
    """Seconds from a Retry-After header (the delta-seconds form; an HTTP date is ignored)."""
    value = response.headers.get("retry-after", "") if response is not None else ""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _selector(probe_id: str | None, base_model: str | None) -> dict[str, str]:
    params = {}
    if probe_id:
        params["probe_id"] = probe_id
    if base_model:
        params["base_model"] = base_model
    return params


def _safetensors(value: Mapping[str, np.ndarray] | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    return save_safetensors({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sorted(value.items())})
