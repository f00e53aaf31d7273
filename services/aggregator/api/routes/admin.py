"""Operator endpoints (admin bearer token): rounds, enrollment tokens, trust, decision log, global adapters.

Routes go through the AggregatorService, never the store. Those without async work are plain functions:
FastAPI runs them in its worker threads, so Redis round trips and adapter decoding never block the event
loop that serves the clients. Closing a round is async (it awaits the round's scoring); the service runs
its loading, defense, aggregation and commit in worker threads.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.aggregator.api.deps import Operator, Service
from services.aggregator.api.errors import OPERATOR_AUTH, errors
from services.aggregator.service import RoundStatus, RoundSummary
from services.aggregator.state import DecisionRecord, RoundRecord

router = APIRouter(prefix="/v1/admin", tags=["operators"], dependencies=[Operator], responses=OPERATOR_AUTH)
RoundIndex = Annotated[int, Path(ge=0, le=2**31 - 1)]
Version = Annotated[int, Path(ge=0, le=2**31 - 1)]


class EnrollmentRequest(BaseModel):
    count: int = Field(1, ge=1, le=1000, description="How many single-use tokens to mint.")
    client_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Bind the token(s) to this client id."
    )


class EnrollmentTokens(BaseModel):
    tokens: list[str] = Field(description="Single-use enrollment tokens; shown once, only hashes are stored.")
    client_id: str | None


@router.post("/enrollments", status_code=201, summary="Mint single-use enrollment tokens for new clients")
def enrollments(body: EnrollmentRequest, service: Service) -> EnrollmentTokens:
    return EnrollmentTokens(
        tokens=service.registrar.issue(body.count, body.client_id), client_id=body.client_id
    )


@router.post(
    "/rounds/{round_index}/open",
    summary="Open a round (samples its clients)",
    responses=errors(s409="A later round exists, the previous one is still open, or no clients"),
)
def open_round(round_index: RoundIndex, service: Service) -> RoundRecord:
    return service.open_round(round_index)


@router.post(
    "/rounds/{round_index}/close",
    summary="Score what is left, defend, aggregate, close the round",
    responses=errors(s409="Round never opened or already closed"),
)
async def close_round(round_index: RoundIndex, service: Service, request: Request) -> RoundSummary:
    summary = await service.close_round(round_index)
    request.app.state.metrics.rounds.labels(summary.phase.value).inc()
    return summary


@router.get(
    "/rounds/{round_index}",
    summary="A round: phase, sampled clients, accepted updates, scores",
    responses=errors(s404="Round never opened"),
)
def round_status(round_index: RoundIndex, service: Service) -> RoundStatus:
    return service.round_status(round_index)


@router.get("/trust", summary="Per-client trust state of the defense")
def trust(service: Service) -> dict[str, dict[str, object]]:
    return service.trust()


@router.get("/decisions", summary="The decision log: who, round, score, factor, decision, why")
def decisions(service: Service) -> list[DecisionRecord]:
    return service.decision_log()


@router.get(
    "/global/{version}",
    response_class=Response,
    summary="Download a global adapter version",
    responses={200: {"content": {"application/octet-stream": {}}}, **errors(s404="No such version")},
)
def global_adapter(version: Version, service: Service) -> Response:
    return Response(service.global_blob(version), media_type="application/octet-stream")
