"""FastAPI application factory of the aggregator service."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from services.aggregator.api.early_auth import SubmissionAuthMiddleware
from services.aggregator.api.errors import field_errors
from services.aggregator.api.limits import SUBMISSION, BodyLimitMiddleware
from services.aggregator.api.metrics import AggregatorMetrics, TimedScorer
from services.aggregator.api.routes import admin, clients, readiness
from services.aggregator.errors import AggregatorError
from services.aggregator.leadership import Lease, LocalLease, RedisLease
from services.aggregator.registration import RegistrationError
from services.aggregator.scheduler import RoundScheduler
from services.aggregator.service import AggregatorService
from services.aggregator.state import StateStoreError, StoreUnavailable
from services.probe_service.api.metrics import MetricsMiddleware
from shared.echo import printable

DESCRIPTION = """
The Safe-FedLLM aggregator. Clients register once with an operator-issued enrollment token (or freely,
rate-limited, when the operator chose open registration) and get a bearer token; they fetch the current
task (round, global adapter version, learning rate, local training settings and the bounds their update
must respect), download the global adapter, train, and submit their adapter (safetensors) with their
layer-0 B snapshots. Submissions are idempotent: the same update returns the same id. Every update is
scored by the probe service asynchronously; the round's defense turns scores into security factors when
the operator (or the round scheduler, when enabled) closes the round. Errors are `{"detail": ...}`; 503
answers carry Retry-After.
"""
MULTIPART_OVERHEAD = 1024 * 1024  # boundaries, part headers and form fields around the two files


def _lease(service: AggregatorService) -> Lease:
    from services.aggregator.state import RedisStateStore

    if isinstance(service.store, RedisStateStore):
        return RedisLease(service.store.redis, service.store.ns, service.settings.scheduler.lease_ttl_s)
    return LocalLease()


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The round scheduler, when configured, runs for the app's life on its event loop."""
    service: AggregatorService = app.state.service
    if not service.settings.scheduler.enabled:
        yield
        return
    metrics: AggregatorMetrics = app.state.metrics
    scheduler = RoundScheduler(
        service, _lease(service), lambda summary: metrics.rounds.labels(summary.phase.value).inc()
    )
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task


def create_app(service: AggregatorService) -> FastAPI:
    docs = service.settings.expose_docs  # a public endpoint may keep its schema to itself
    app = FastAPI(
        title="safe-fedllm aggregator",
        version="1",
        description=DESCRIPTION,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        lifespan=_lifespan,
    )
    metrics = AggregatorMetrics()
    app.state.service, app.state.metrics = service, metrics
    if service.scorer is not None and not isinstance(service.scorer, TimedScorer):
        service.scorer = TimedScorer(service.scorer, metrics)
    settings = service.settings

    def limit_for(path: str) -> int:
        if SUBMISSION.match(path):
            return 2 * settings.max_update_bytes + MULTIPART_OVERHEAD
        return settings.max_request_bytes

    app.add_middleware(SubmissionAuthMiddleware)  # innermost: inside the body limit, before any read
    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(clients.router)
    app.include_router(admin.router)
    app.include_router(readiness.router)

    @app.exception_handler(AggregatorError)
    async def _aggregator_error(_: Request, error: AggregatorError) -> JSONResponse:
        return JSONResponse({"detail": printable(str(error))}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the input: a lone surrogate cannot be encoded (a 500), a megabyte
        # would be sent back. The fields, messages and types only.
        return JSONResponse({"detail": field_errors(error.errors())}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException) -> Response:
        if error.status_code == 400:  # FastAPI's "malformed body" (multipart, JSON): a 422 like any bad input
            detail = printable(f"malformed request body: {error.detail}")
            return JSONResponse({"detail": detail}, status_code=422)
        return await http_exception_handler(request, error)

    @app.exception_handler(RegistrationError)
    async def _registration_error(_: Request, error: RegistrationError) -> JSONResponse:
        headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s else None
        return JSONResponse({"detail": printable(str(error))}, status_code=error.status_code, headers=headers)

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(_: Request, error: StoreUnavailable) -> JSONResponse:
        headers = {"Retry-After": str(settings.retry_after_s)}
        return JSONResponse({"detail": str(error)}, status_code=503, headers=headers)

    @app.exception_handler(StateStoreError)
    async def _store_error(_: Request, error: StateStoreError) -> JSONResponse:
        return JSONResponse({"detail": printable(str(error))}, status_code=409)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if settings.expose_metrics:

        @app.get("/metrics", tags=["operations"], response_class=Response, summary="Prometheus metrics")
        async def prometheus() -> Response:
            return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
