"""POST /v1/score and /v1/score/batch: one update, or many updates / step snapshots in one call."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request

from services.probe_service.api.body import read_body, read_multipart
from services.probe_service.api.context import ServiceContext, get_context
from services.probe_service.errors import InvalidUpdate, PayloadTooLarge, UnsupportedMediaType
from services.probe_service.payloads import (
    ScoreInput,
    input_from_json,
    input_from_safetensors,
    selector_from_adapter_config,
    selector_from_params,
    to_features,
)
from services.probe_service.schemas import (
    BatchScoreResponse,
    ErrorResponse,
    ScoreResponse,
    ScoreResult,
    SnapshotRequest,
)

router = APIRouter(prefix="/v1", tags=["scoring"])
Context = Annotated[ServiceContext, Depends(get_context)]

SAFETENSORS_TYPES = ("application/octet-stream", "application/x-safetensors", "application/vnd.safetensors")
# Query parameters win over these headers; both carry the LoRA config of a raw safetensors body.
HEADER_PARAMS = {
    "x-probe-id": "probe_id",
    "x-base-model": "base_model",
    "x-lora-r": "r",
    "x-lora-target-modules": "target_modules",
}
SELECTOR_FIELDS = ("probe_id", "base_model", "r", "target_modules")

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
                        "description": "adapter_model.safetensors (repeat the part for a batch)",
                    },
                    "config": {"type": "string", "format": "binary", "description": "adapter_config.json"},
                    "reference": {
                        "type": "string",
                        "format": "binary",
                        "description": "optional reference adapter; the delta is taken against it",
                    },
                    "probe_id": {"type": "string"},
                    "base_model": {"type": "string"},
                },
            }
        },
        "application/octet-stream": {
            "schema": {"type": "string", "format": "binary"},
            "example": "<safetensors: an adapter, or a tensor 'snapshots' [n, dim]>",
        },
        "application/json": {"schema": SnapshotRequest.model_json_schema()},
    },
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown probe, or none for this base model / LoRA shape"},
    413: {"model": ErrorResponse, "description": "Body over the limit, or too many updates"},
    415: {"model": ErrorResponse, "description": "Content type not multipart, safetensors or JSON"},
    422: {
        "model": ErrorResponse,
        "description": (
            "Wrong keys, shape or dtype; NaN/Inf; truncated or malformed body; not safetensors (a pickle, "
            "zip or gzip body is named as such); an adapter whose rank or targets do not fit the probe"
        ),
    },
    503: {"model": ErrorResponse, "description": "Scorer replicas unavailable; retry after Retry-After"},
}


@router.post(
    "/score",
    summary="Score one LoRA update",
    description=(
        "Body: a PEFT adapter as multipart (adapter=adapter_model.safetensors, config=adapter_config.json, "
        "optional reference), a raw safetensors adapter (LoRA config in query parameters base_model, r, "
        "target_modules or X-Base-Model / X-Lora-R / X-Lora-Target-Modules headers), or one snapshot as "
        "a safetensors tensor 'snapshots' or JSON. probe_id (query, header X-Probe-Id or field) picks the "
        "probe explicitly."
    ),
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses=_ERRORS,
)
async def score_one(request: Request, context: Context) -> ScoreResponse:
    probe_id, threshold, version, results = await _score(request, context, batch=False)
    return ScoreResponse(
        probe_id=probe_id, threshold=threshold, feature_spec_version=version, **results[0].model_dump()
    )


@router.post(
    "/score/batch",
    summary="Score many updates, or the step snapshots of one client, in one call",
    description="As /v1/score, with several adapter parts or a snapshots tensor/list of n rows.",
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses=_ERRORS,
)
async def score_batch(request: Request, context: Context) -> BatchScoreResponse:
    probe_id, threshold, version, results = await _score(request, context, batch=True)
    return BatchScoreResponse(
        probe_id=probe_id,
        threshold=threshold,
        feature_spec_version=version,
        results=results,
        flagged=sum(r.verdict == "malicious" for r in results),
    )


async def _score(
    request: Request, context: Context, batch: bool
) -> tuple[str, float, str, list[ScoreResult]]:
    parsed = await _parse(request, context, batch)
    if parsed.count == 0:
        raise InvalidUpdate("the request holds no update (0 snapshot rows)")
    limit = context.settings.max_updates_per_request if batch else 1
    if parsed.count > limit:
        if not batch:
            raise InvalidUpdate(f"{parsed.count} updates sent to /v1/score; use /v1/score/batch")
        raise PayloadTooLarge(f"{parsed.count} updates exceed the limit of {limit} per request")
    manifest, features = to_features(context.bank, parsed)
    probabilities = np.asarray(await context.backend.score(manifest.probe_id, features), dtype=np.float64)
    context.metrics.observe_scores(manifest.probe_id, probabilities, manifest.threshold)
    results = [
        ScoreResult(probability=p, verdict="malicious" if p >= manifest.threshold else "benign")
        for p in probabilities.tolist()
    ]
    return manifest.probe_id, manifest.threshold, manifest.feature_spec.version, results


async def _parse(request: Request, context: Context, batch: bool) -> ScoreInput:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in (*SAFETENSORS_TYPES, "multipart/form-data", "application/json"):
        raise UnsupportedMediaType(
            f"content type {content_type or 'none'!r}; send multipart/form-data (PEFT adapter files), "
            "application/octet-stream (safetensors) or application/json (snapshots)"
        )
    settings = context.settings
    # JSON costs ~30x its size in CPU and memory to parse: a lower limit, enforced while streaming.
    limit = settings.max_json_body_bytes if content_type == "application/json" else settings.max_body_bytes
    body = await read_body(request, limit)
    params = {name: request.headers[h] for h, name in HEADER_PARAMS.items() if h in request.headers}
    params.update({k: v for k, v in request.query_params.items() if k in SELECTOR_FIELDS})
    if content_type == "multipart/form-data":
        return await _parse_multipart(request, body, params, settings.max_updates_per_request + 2)
    selector = selector_from_params(params)
    if content_type == "application/json":
        return input_from_json(body, selector)
    return input_from_safetensors(body, selector)


async def _parse_multipart(
    request: Request, body: bytes, params: dict[str, str], max_files: int
) -> ScoreInput:
    fields = await read_multipart(request, body, max_files)
    for name in SELECTOR_FIELDS:
        if name in fields and isinstance(value := fields[name][0], str):
            params.setdefault(name, value)
    adapters = fields.get("adapter", [])
    if not adapters:
        raise InvalidUpdate("multipart body needs a file part 'adapter' (adapter_model.safetensors)")
    files: dict[str, list[bytes]] = {}
    for name, values in fields.items():
        if name in ("adapter", "config", "reference"):
            blobs = [v for v in values if isinstance(v, bytes)]
            if len(blobs) != len(values):
                raise InvalidUpdate(f"part {name!r} must be a file, not a form field")
            files[name] = blobs
    selector = selector_from_params(params)
    if "config" in files:
        selector = selector_from_adapter_config(files["config"][0], selector)
    reference = files["reference"][0] if "reference" in files else None
    return ScoreInput(selector, adapters=files["adapter"], reference=reference)
