"""HTTP clients of the audit service (sync and async). One attempt per call: callers own the retries
(the aggregator's ScoringPolicy); errors raise ProbeServiceClientError with the service's status and code.

    with AuditServiceClient("http://127.0.0.1:8000/audit") as client:
        result = client.audit_dir(Path("my-adapter"), reference=global_state)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from services.audit_service.api import AuditResponse
from services.probe_service.client import _checked
from shared.updates import encode_lora_state

Adapter = Mapping[str, np.ndarray] | bytes


def _blob(value: Adapter) -> bytes:
    return value if isinstance(value, bytes) else encode_lora_state(dict(value))


def audit_request(
    adapter: Adapter,
    reference: Adapter | None = None,
    config: bytes | None = None,
    base_model: str | None = None,
) -> dict[str, Any]:
    """httpx arguments of POST /v1/audit as multipart (adapter, optional config and reference)."""
    files = [("adapter", ("adapter_model.safetensors", _blob(adapter), "application/octet-stream"))]
    if config is not None:
        files.append(("config", ("adapter_config.json", config, "application/json")))
    if reference is not None:
        files.append(("reference", ("reference.safetensors", _blob(reference), "application/octet-stream")))
    params = {"base_model": base_model} if base_model else {}
    return {"method": "POST", "url": "/v1/audit", "files": files, "params": params}


class AuditServiceClient:
    def __init__(self, base_url: str, timeout_s: float = 120.0) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s)

    def __enter__(self) -> AuditServiceClient:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def audit(self, adapter: Adapter, reference: Adapter | None = None, **options: Any) -> AuditResponse:
        response = self._http.request(**audit_request(adapter, reference, **options))
        return AuditResponse.model_validate(_checked(response))

    def audit_dir(self, directory: Path, reference: Adapter | None = None) -> AuditResponse:
        """A PEFT `save_pretrained` directory (adapter_model.safetensors + adapter_config.json)."""
        return self.audit(
            (directory / "adapter_model.safetensors").read_bytes(),
            reference,
            config=(directory / "adapter_config.json").read_bytes(),
        )


class AsyncAuditServiceClient:
    def __init__(self, base_url: str, timeout_s: float = 120.0) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def audit(
        self, adapter: Adapter, reference: Adapter | None = None, **options: Any
    ) -> AuditResponse:
        response = await self._http.request(**audit_request(adapter, reference, **options))
        return AuditResponse.model_validate(_checked(response))
