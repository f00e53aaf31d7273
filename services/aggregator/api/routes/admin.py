"""Operator endpoints (admin bearer token): rounds, trust, audit log, global adapters."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from fastapi.responses import Response

from services.aggregator.api.deps import Operator, Service

router = APIRouter(prefix="/v1/admin", tags=["operators"], dependencies=[Operator])


@router.post("/rounds/{round_index}/open", summary="Open a round (samples its clients)")
async def open_round(round_index: int, service: Service) -> dict:
    record = service.open_round(round_index)
    return {**asdict(record), "phase": record.phase.value}


@router.post("/rounds/{round_index}/close", summary="Score what is left, defend, aggregate, close the round")
async def close_round(round_index: int, service: Service) -> dict:
    summary = await service.close_round(round_index)
    return {**asdict(summary), "phase": summary.phase.value}


@router.get("/rounds/{round_index}", summary="A round: phase, sampled clients, accepted updates, scores")
async def round_status(round_index: int, service: Service) -> dict:
    return service.round_status(round_index)


@router.get("/trust", summary="Per-client trust state of the defense")
async def trust(service: Service) -> dict[str, dict]:
    return service.store.get_trust()


@router.get("/audit", summary="The audit log: who, round, score, factor, decision, why")
async def audit(service: Service) -> list[dict]:
    return [asdict(a) for a in service.store.audit_log()]


@router.get("/global/{version}", response_class=Response, summary="Download a global adapter version")
async def global_adapter(version: int, service: Service) -> Response:
    return Response(service.global_blob(version), media_type="application/octet-stream")
