"""The audit service's FastAPI app: POST /v1/audit, GET /v1/models, /healthz, /readyz.

Request decoding is the probe service's (size-capped body, in-memory multipart, adapter_config.json
parsing); the errors are its family too, so both services answer bad input with the same JSON shape.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.audit_service.bank import AuditBank, AuditJob, AuditOutcome
from services.audit_service.payloads import FILE_PARTS, job_from_parts
from services.audit_service.settings import AuditServiceSettings
from services.probe_service.api.body import read_body, read_multipart
from services.probe_service.api.routes.score import SAFETENSORS_TYPES
from services.probe_service.errors import InvalidUpdate, ProbeServiceError, UnsupportedMediaType
from services.probe_service.schemas import ErrorResponse


class AuditBackend(Protocol):
    async def audit(self, job: AuditJob) -> AuditOutcome: ...


class InProcessBackend:
    """Audits in this process, off the event loop (unit tests, single-process deployments)."""

    def __init__(self, bank: AuditBank) -> None:
        self.bank = bank

    async def audit(self, job: AuditJob) -> AuditOutcome:
        [outcome] = await asyncio.to_thread(self.bank.run, [job])
        if isinstance(outcome, ProbeServiceError):
            raise outcome
        return outcome


class AuditResponse(BaseModel):
    base_model: str
    score: float = Field(
        description="Harm preference with the adapter minus with the reference (> 0: towards complying)."
    )
    harm_preference: float = Field(description="Mean over canaries of log-lik(compliant) - log-lik(refusal).")
    reference_harm_preference: float
    reference: str = Field(description="'given', or 'lora_init' (the base model) when none was sent.")
    num_canaries: int


@dataclass
class AuditContext:
    bank: AuditBank
    backend: AuditBackend
    settings: AuditServiceSettings


_REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["adapter"],
                "properties": {
                    "adapter": {
                        "type": "string",
                        "format": "binary",
                        "description": "adapter_model.safetensors",
                    },
                    "config": {"type": "string", "format": "binary", "description": "adapter_config.json"},
                    "reference": {
                        "type": "string",
                        "format": "binary",
                        "description": "the current global adapter (default: the LoRA init, i.e. the base)",
                    },
                    "base_model": {"type": "string"},
                },
            }
        },
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
_ERRORS = {
    404: {"model": ErrorResponse, "description": "The adapter's base model is not held here"},
    413: {"model": ErrorResponse, "description": "Body over the limit"},
    415: {"model": ErrorResponse, "description": "Content type not multipart or safetensors"},
    422: {"model": ErrorResponse, "description": "Wrong keys, shapes, LoRA config; NaN/Inf; malformed body"},
}


def create_app(bank: AuditBank, backend: AuditBackend, settings: AuditServiceSettings) -> FastAPI:
    app = FastAPI(
        title="safe-fedllm audit service",
        version="1",
        description="Audits a LoRA adapter's effect on the model's safety on a private canary set.",
    )
    context = AuditContext(bank, backend, settings)

    @app.exception_handler(ProbeServiceError)
    async def _service_error(_: Request, error: ProbeServiceError) -> JSONResponse:
        return JSONResponse({"error": error.code, "detail": error.message}, status_code=error.status_code)

    @app.post(
        "/v1/audit",
        summary="Audit one LoRA adapter",
        description=(
            "Body: a PEFT adapter as multipart (adapter=adapter_model.safetensors, "
            "config=adapter_config.json, optional reference=the current global adapter) or a raw safetensors "
            "adapter (base_model in the query or X-Base-Model). Returns the change in harm preference on the "
            "service's canaries."
        ),
        openapi_extra={"requestBody": _REQUEST_BODY},
        responses=_ERRORS,  # type: ignore[arg-type]
    )
    async def audit(request: Request) -> AuditResponse:
        job = await _job(request, context)
        context.bank.check(job)  # 404/422 here, before the job joins a batch
        outcome = await context.backend.audit(job)
        return AuditResponse(
            base_model=job.model,
            score=outcome.score,
            harm_preference=outcome.harm_preference,
            reference_harm_preference=outcome.reference_harm_preference,
            reference="lora_init" if job.reference is None else "given",
            num_canaries=outcome.num_canaries,
        )

    @app.get("/v1/models", summary="Base models held and their LoRA layout")
    async def models() -> dict:
        bank = context.bank
        shared = {name: name in bank.shared for name in bank.models()}
        return {"models": bank.models(), "lora": bank.lora.model_dump(mode="json"), "shared_base": shared}

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: the base models are loaded")
    async def readyz() -> JSONResponse:
        held = context.bank.models()
        return JSONResponse(
            {"status": "ready" if held else "unavailable", "models": held}, 200 if held else 503
        )

    return app


async def _job(request: Request, context: AuditContext) -> AuditJob:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in (*SAFETENSORS_TYPES, "multipart/form-data"):
        raise UnsupportedMediaType(
            f"content type {content_type or 'none'!r}; send multipart/form-data (PEFT adapter files) "
            "or application/octet-stream (a safetensors adapter)"
        )
    body = await read_body(request, context.settings.max_body_bytes)
    base_model = request.query_params.get("base_model") or request.headers.get("x-base-model")
    if content_type != "multipart/form-data":
        files: dict[str, list[bytes]] = {"adapter": [body]}
    else:
        fields = await read_multipart(request, body, max_files=len(FILE_PARTS) + 1)
        field = fields.get("base_model", [None])[0]
        if isinstance(field, str) and field:
            base_model = base_model or field
        files = {}
        for name in FILE_PARTS:
            values = fields.get(name, [])
            if not all(isinstance(v, bytes) for v in values):
                raise InvalidUpdate(f"part {name!r} must be a file, not a form field")
            if values:
                files[name] = values  # type: ignore[assignment]
    return job_from_parts(files, base_model or None, context.bank.models(), context.bank.lora)
