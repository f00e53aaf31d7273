"""Readiness: the aggregator is ready only while its state store answers (Kubernetes' readinessProbe)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.aggregator.api.deps import Service
from services.aggregator.state import StoreUnavailable

router = APIRouter(tags=["operations"])


# A plain def: FastAPI runs it in its thread pool, so a slow Redis never blocks the event loop.
@router.get(
    "/readyz",
    summary="Readiness: the state store answers",
    responses={503: {"description": "The state store does not answer (down, unreachable or loading)"}},
)
def readyz(service: Service) -> JSONResponse:
    try:
        service.store.ping()
    except StoreUnavailable as error:
        return JSONResponse({"status": "unavailable", "detail": str(error)}, status_code=503)
    return JSONResponse({"status": "ready"})
