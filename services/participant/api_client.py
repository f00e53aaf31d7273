"""The aggregator's client REST API as seen by a participant: register, task, global adapter, submit.

Every call retries 429/502/503/504 and network errors with backoff, honouring Retry-After, until it
succeeds or the participant is told to stop; any other refusal raises `Refused` with the server's reason.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from services.participant.retry import RETRIED_STATUSES, retry_delay
from services.participant.settings import ParticipantSettings

log = logging.getLogger(__name__)


class Stopped(Exception):
    """The participant was told to stop (SIGTERM) while waiting."""


class Refused(Exception):
    """A 4xx answer: the server's reason, and what it means for a participant."""

    def __init__(self, status: int, detail: str, action: str) -> None:
        self.status, self.detail = status, detail
        super().__init__(f"{action}: HTTP {status}: {detail}")


class Task(BaseModel):
    """The fields of GET /v1/task a participant uses (others are ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    lora: dict
    round_index: int | None
    phase: str | None
    sampled: bool
    global_version: int | None
    lr: float | None
    training: dict
    shadow: bool = False


@dataclass(frozen=True)
class Accepted:
    update_id: str
    duplicate: bool


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail if detail is not None else body)[:500]


class AggregatorClient:
    def __init__(self, settings: ParticipantSettings, stop: threading.Event) -> None:
        self.settings, self.stop = settings, stop
        verify: ssl.SSLContext | bool = True
        if settings.ca_bundle is not None:
            verify = ssl.create_default_context(cafile=str(settings.ca_bundle))
        self.http = httpx.Client(base_url=settings.server, timeout=settings.timeout_s, verify=verify)
        self.headers: dict[str, str] = {}

    def close(self) -> None:
        self.http.close()

    def authenticate(self, client_id: str, token: str) -> None:
        self.headers = {"x-client-id": client_id, "authorization": f"Bearer {token}"}

    def _request(self, action: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            if self.stop.is_set():
                raise Stopped()
            retry_after = None
            try:
                response = self.http.request(method, path, headers=self.headers, **kwargs)
                if response.status_code not in RETRIED_STATUSES:
                    if response.is_success:
                        return response
                    raise Refused(response.status_code, _detail(response), action)
                retry_after = response.headers.get("retry-after")
                problem = f"HTTP {response.status_code}"
            except httpx.TransportError as error:  # refused, reset, timed out, TLS failure
                if isinstance(error, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(error):
                    raise Refused(0, f"the server's certificate does not verify: {error}", action) from error
                problem = type(error).__name__
            delay = retry_delay(attempt, retry_after, cap_s=self.settings.max_backoff_s)
            log.warning("%s: %s; retrying in %.1fs (attempt %d)", action, problem, delay, attempt + 1)
            attempt += 1
            if self.stop.wait(delay):
                raise Stopped()

    def register(self, client_id: str, enrollment_token: str | None) -> str:
        body = {"client_id": client_id, "enrollment_token": enrollment_token}
        return str(self._request("enrol", "POST", "/v1/clients", json=body).json()["token"])

    def task(self) -> Task:
        return Task.model_validate(self._request("task", "GET", "/v1/task").json())

    def global_adapter(self, version: int) -> bytes:
        return self._request("download the global adapter", "GET", f"/v1/global/{version}").content

    def submit(
        self,
        round_index: int,
        adapter: bytes,
        snapshots: bytes | None,
        num_samples: int,
        batch_size: int,
        train_loss: float,
    ) -> Accepted:
        files = {"adapter": ("adapter_model.safetensors", adapter, "application/octet-stream")}
        if snapshots is not None:
            files["snapshots"] = ("snapshots.safetensors", snapshots, "application/octet-stream")
        data = {"num_samples": str(num_samples), "batch_size": str(batch_size)}
        data["train_loss"] = repr(train_loss)
        response = self._request(
            f"submit round {round_index}", "POST", f"/v1/rounds/{round_index}/updates", files=files, data=data
        )
        body = response.json()
        return Accepted(str(body["update_id"]), bool(body["duplicate"]))
