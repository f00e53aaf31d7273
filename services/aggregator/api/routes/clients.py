"""Client endpoints: register, current task, global adapter download, update submission."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.aggregator.api.deps import ClientId, Service
from services.aggregator.service import InvalidSubmission
from shared.lora_state import LoraStateError
from shared.updates import ClientUpdate, decode_lora_state, decode_snapshots

router = APIRouter(prefix="/v1", tags=["clients"])


class Registration(BaseModel):
    client_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", examples=["client-3"])


class Credentials(BaseModel):
    client_id: str
    token: str = Field(description="Bearer token; send it with X-Client-Id on every call. Shown once.")


class Task(BaseModel):
    round_index: int | None
    phase: str | None
    sampled: bool
    global_version: int | None
    lr: float | None
    training: dict
    shadow: bool = Field(False, description="Whether this round needs the shadow branch from this client.")


class Accepted(BaseModel):
    update_id: str
    duplicate: bool = Field(description="True when this exact update was already accepted.")


@router.post("/clients", status_code=201, summary="Register a client and receive its token")
async def register(body: Registration, service: Service) -> Credentials:
    return Credentials(client_id=body.client_id, token=service.register(body.client_id))


@router.get("/task", summary="The current round, whether this client is sampled, and what to train")
async def task(client_id: ClientId, service: Service) -> Task:
    record = service.current_round()
    training = service.settings.training.model_dump(mode="json")
    if record is None:
        return Task(
            round_index=None, phase=None, sampled=False, global_version=None, lr=None, training=training
        )
    return Task(
        round_index=record.round_index,
        phase=record.phase.value,
        sampled=client_id in record.sampled,
        global_version=record.global_version,
        lr=record.lr,
        training=training,
        shadow=client_id in record.sampled and service.needs_shadow(record.round_index, client_id),
    )


@router.get(
    "/global/{version}",
    summary="Download a global adapter version (safetensors)",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def global_adapter(version: int, client_id: ClientId, service: Service) -> Response:
    return Response(service.global_blob(version), media_type="application/octet-stream")


@router.post(
    "/rounds/{round_index}/updates",
    status_code=202,
    summary="Submit this round's update: the adapter and the layer-0 B snapshots",
    responses={
        403: {"description": "token of another client"},
        409: {"description": "wrong or closed round"},
    },
)
async def submit(
    round_index: int,
    client_id: ClientId,
    service: Service,
    adapter: Annotated[UploadFile, File(description="adapter_model.safetensors (all LoRA tensors)")],
    num_samples: Annotated[int, Form(ge=1)],
    batch_size: Annotated[int, Form(ge=1)],
    snapshots: Annotated[
        UploadFile | None, File(description="safetensors with b_snapshots [T, D] and shadow_snapshots [T, D]")
    ] = None,
    train_loss: Annotated[float | None, Form()] = None,
) -> Accepted:
    limit = service.settings.max_update_bytes
    blobs = []
    for part in (adapter, snapshots):
        if part is None:
            blobs.append(None)
            continue
        data = await part.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"part {part.filename!r} exceeds {limit} bytes")
        blobs.append(data)
    try:
        lora_state = decode_lora_state(blobs[0])
        decoded = decode_snapshots(blobs[1]) if blobs[1] is not None else {}
    except LoraStateError as error:
        raise InvalidSubmission(str(error)) from error
    spec = service.probe_spec
    update = ClientUpdate(
        client_id=client_id,
        round_index=round_index,
        num_samples=num_samples,
        lora_state=lora_state,
        b_keys=list(spec.keys) if spec is not None else [],
        train_loss=train_loss if train_loss is not None and math.isfinite(train_loss) else float("nan"),
        batch_size=batch_size,
        **decoded,
    )
    update_id, created = await service.submit(update)
    return Accepted(update_id=update_id, duplicate=not created)
