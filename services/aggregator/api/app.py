"""FastAPI application factory of the aggregator service."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.aggregator.api.routes import admin, clients
from services.aggregator.service import AggregatorError, AggregatorService
from services.aggregator.state import StateStoreError

DESCRIPTION = """
The Safe-FedLLM aggregator. Clients register once (and get a bearer token), fetch the current task (round,
global adapter version, learning rate, local training settings), download the global adapter, train, and
submit their adapter (safetensors) with their layer-0 B snapshots. Submissions are idempotent: the same
update returns the same id. Every update is scored by the probe service asynchronously; the round's
defense turns scores into security factors when the operator closes the round.
"""


def create_app(service: AggregatorService) -> FastAPI:
    app = FastAPI(title="safe-fedllm aggregator", version="1", description=DESCRIPTION)
    app.state.service = service
    app.include_router(clients.router)
    app.include_router(admin.router)

    @app.exception_handler(AggregatorError)
    async def _aggregator_error(_: Request, error: AggregatorError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status_code)

    @app.exception_handler(StateStoreError)
    async def _store_error(_: Request, error: StateStoreError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=409)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
