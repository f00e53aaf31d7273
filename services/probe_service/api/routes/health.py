"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from services.probe_service.api.context import ServiceContext, get_context

router = APIRouter(tags=["operations"])
Context = Annotated[ServiceContext, Depends(get_context)]


@router.get("/healthz", summary="Liveness: the ingress answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: probes are loaded and the scorer answers",
    responses={503: {"description": "No probe loaded, or the scorer does not answer"}},
)
async def readyz(context: Context) -> JSONResponse:
    probes = [m.probe_id for m in context.bank.manifests()]
    try:
        scorer = await context.backend.ready()
    except Exception as error:  # any failure of the scorer means "not ready", with the reason
        return JSONResponse({"status": "unavailable", "detail": str(error)}, status_code=503)
    ready = bool(probes) and scorer
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "probes": probes, "scorer": scorer},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", summary="Prometheus metrics of this replica", response_class=Response)
async def metrics(context: Context) -> Response:
    return Response(context.metrics.render(), media_type=CONTENT_TYPE_LATEST)
