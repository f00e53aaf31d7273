"""Client endpoints: register, current task, global adapter download, update submission.

Store I/O, adapter decoding and hashing run in worker threads (plain `def` routes; the submission decodes in
`run_in_threadpool` and `AggregatorService.submit` stores in a worker thread), never on the event loop: one
large submission does not stall the other clients.
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Path, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from services.aggregator.api.deps import ClientId, Service
from services.aggregator.api.errors import CLIENT_AUTH, INVALID, UNAVAILABLE, errors
from services.aggregator.errors import AggregatorError, InvalidSubmission, RefusedUpdate
from services.aggregator.registration import RegistrationError
from services.aggregator.update_bounds import max_num_samples
from shared.echo import quoted
from shared.lora_state import LoraStateError
from shared.updates import ClientUpdate, decode_lora_state, decode_snapshots

router = APIRouter(prefix="/v1", tags=["clients"])
RoundIndex = Annotated[int, Path(ge=0, le=2**31 - 1)]
Version = Annotated[int, Path(ge=0, le=2**31 - 1)]


class Registration(BaseModel):
    client_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", examples=["client-3"])
    enrollment_token: str | None = Field(
        None,
        max_length=256,
        description="Single-use token from the operator (unless registration is open).",
    )


class Credentials(BaseModel):
    client_id: str
    token: str = Field(description="Bearer token; send it with X-Client-Id on every call. Shown once.")


class Task(BaseModel):
    model: str = Field(description="The base model the federation fine-tunes (the client loads it itself).")
    lora: dict[str, object] = Field(
        description="The LoRA shape every client trains (r, alpha, dropout, target_modules)."
    )
    round_index: int | None
    phase: str | None
    sampled: bool
    global_version: int | None
    lr: float | None
    training: dict[str, object]
    local_steps: int = Field(description="T: local steps to train; snapshots must have exactly T rows.")
    batch_size: int = Field(description="b: samples per step; submit exactly this batch_size.")
    max_num_samples: int = Field(
        description="The subset size b * T: the most num_samples an update may claim."
    )
    oversized_updates: str = Field(description="What a larger claim gets: reject (422) or clip (audited).")
    shadow: bool = Field(False, description="Whether this round needs the shadow branch from this client.")


class Accepted(BaseModel):
    update_id: str
    duplicate: bool = Field(description="True when this exact update was already accepted.")


@router.post(
    "/clients",
    status_code=201,
    summary="Register a client and receive its token",
    responses=errors(
        s401="Enrollment token missing (registration policy 'enrollment')",
        s403="Enrollment token unknown, spent, or issued for another client id",
        s409="Client id already registered",
        s413="Request body over the limit",
        s422=INVALID,
        s429="Open registration over its rate limit; retry after Retry-After seconds",
        s503=UNAVAILABLE,
    ),
)
def register(body: Registration, service: Service, request: Request) -> Credentials:
    outcomes = request.app.state.metrics.registrations
    try:
        token = service.register(body.client_id, body.enrollment_token)
    except RegistrationError as error:
        outcomes.labels(str(error.status_code)).inc()
        raise
    outcomes.labels("created").inc()
    return Credentials(client_id=body.client_id, token=token)


@router.get(
    "/task",
    summary="The current round, whether this client is sampled, and what to train",
    responses=CLIENT_AUTH,
)
def task(client_id: ClientId, service: Service) -> Task:
    record = service.current_round()
    settings = service.settings
    limits = {
        "model": settings.model,
        "lora": settings.lora.model_dump(mode="json"),
        "training": settings.training.model_dump(mode="json"),
        "local_steps": settings.training.local_steps,
        "batch_size": settings.training.batch_size,
        "max_num_samples": max_num_samples(settings.training),
        "oversized_updates": settings.oversized_updates,
    }
    if record is None:
        return Task.model_validate(
            {"round_index": None, "phase": None, "sampled": False, "global_version": None, "lr": None}
            | limits
        )
    return Task.model_validate(
        {
            "round_index": record.round_index,
            "phase": record.phase.value,
            "sampled": client_id in record.sampled,
            "global_version": record.global_version,
            "lr": record.lr,
            "shadow": client_id in record.sampled and service.needs_shadow(record.round_index, client_id),
            **limits,
        }
    )


@router.get(
    "/global/{version}",
    summary="Download a global adapter version (safetensors)",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        **CLIENT_AUTH,
        **errors(s404="No such version"),
    },
)
def global_adapter(version: Version, client_id: ClientId, service: Service) -> Response:
    return Response(service.global_blob(version), media_type="application/octet-stream")


@router.post(
    "/rounds/{round_index}/updates",
    status_code=202,
    summary="Submit this round's update: the adapter and the layer-0 B snapshots",
    responses={
        **CLIENT_AUTH,
        **errors(
            s409="Wrong or closed round, not sampled, or a different update from this client this round",
            s422=(
                "Not safetensors, wrong keys or shapes, NaN/Inf, a claim above the task's bounds, or refused "
                "by a server check: last snapshot != the adapter, frozen or out-of-envelope layer, norm over "
                "the bound"
            ),
        ),
    },
)
async def submit(
    round_index: RoundIndex,
    client_id: ClientId,
    service: Service,
    request: Request,
    adapter: Annotated[UploadFile, File(description="adapter_model.safetensors (all LoRA tensors)")],
    num_samples: Annotated[int, Form(ge=1, le=2**62, description="n_i; at most the task's max_num_samples")],
    batch_size: Annotated[int, Form(ge=1, le=2**62, description="b; the task's batch_size")],
    snapshots: Annotated[
        UploadFile | None, File(description="safetensors with b_snapshots [T, D] and shadow_snapshots [T, D]")
    ] = None,
    train_loss: Annotated[float | None, Form()] = None,
) -> Accepted:
    outcomes = request.app.state.metrics.submissions
    try:
        blobs = await _read_parts(adapter, snapshots, service.settings.max_update_bytes)
        update_id, created = await _accept(
            service, client_id, round_index, blobs, num_samples, batch_size, train_loss
        )
    except (AggregatorError, HTTPException) as error:
        outcomes.labels(str(error.status_code)).inc()
        if isinstance(error, RefusedUpdate):
            request.app.state.metrics.refused.labels(error.check).inc()
        raise
    outcomes.labels("accepted" if created else "duplicate").inc()
    return Accepted(update_id=update_id, duplicate=not created)


async def _read_parts(adapter: UploadFile, snapshots: UploadFile | None, limit: int) -> list[bytes | None]:
    blobs: list[bytes | None] = []
    for part in (adapter, snapshots):
        if part is None:
            blobs.append(None)
            continue
        data = await part.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"part {quoted(part.filename or '')} exceeds {limit} bytes")
        blobs.append(data)
    return blobs


async def _accept(
    service: Service,
    client_id: str,
    round_index: int,
    blobs: list[bytes | None],
    num_samples: int,
    batch_size: int,
    train_loss: float | None,
) -> tuple[str, bool]:
    # Decoding is CPU work: a worker thread; `submit` is the simulation's entry point too.
    update = await run_in_threadpool(
        _decode, service, client_id, round_index, blobs, num_samples, batch_size, train_loss
    )
    return await service.submit(update)


def _decode(
    service: Service,
    client_id: str,
    round_index: int,
    blobs: list[bytes | None],
    num_samples: int,
    batch_size: int,
    train_loss: float | None,
) -> ClientUpdate:
    try:
        adapter = blobs[0]
        assert adapter is not None  # the route requires the adapter part
        lora_state = decode_lora_state(adapter)
        decoded = decode_snapshots(blobs[1]) if blobs[1] is not None else {}
    except LoraStateError as error:
        raise InvalidSubmission(str(error)) from error
    spec = service.probe_spec
    return ClientUpdate(
        client_id=client_id,
        round_index=round_index,
        num_samples=num_samples,
        lora_state=lora_state,
        b_keys=list(spec.keys) if spec is not None else [],
        train_loss=train_loss if train_loss is not None and math.isfinite(train_loss) else float("nan"),
        batch_size=batch_size,
        **decoded,  # type: ignore[arg-type]  # the snapshot fields decode_snapshots found
    )
