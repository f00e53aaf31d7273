"""FastAPI application factory: one app, served by uvicorn directly or as Serve's ingress."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from services.probe_service.api.context import ServiceContext
from services.probe_service.api.metrics import MetricsMiddleware, ServiceMetrics
from services.probe_service.api.routes import health, probes, score
from services.probe_service.backends import ScoringBackend
from services.probe_service.errors import ProbeServiceError
from services.probe_service.scoring import ProbeBank
from services.probe_service.settings import ProbeServiceSettings
from shared.echo import printable

DESCRIPTION = """
Scores federated LoRA updates with Safe-FedLLM's LoRA-probe (logistic regression on the layer-0 lora_B
delta, exported to ONNX). Send a PEFT adapter, a raw safetensors adapter, or already-extracted snapshots;
get P(malicious) and a verdict at the probe's threshold. Nothing sent here is ever unpickled.
"""


def create_app(
    bank: ProbeBank, backend: ScoringBackend, settings: ProbeServiceSettings | None = None
) -> FastAPI:
    app = FastAPI(title="safe-fedllm probe service", version="1", description=DESCRIPTION)
    metrics = ServiceMetrics()
    app.state.context = ServiceContext(bank, backend, settings or ProbeServiceSettings(), metrics)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(score.router)
    app.include_router(probes.router)
    app.include_router(health.router)

    @app.exception_handler(ProbeServiceError)
    async def _service_error(_: Request, error: ProbeServiceError) -> JSONResponse:
        retry = getattr(error, "retry_after_s", None)
        headers = {"Retry-After": str(retry)} if retry is not None else None
        return JSONResponse(
            {"error": error.code, "detail": printable(error.message)},
            status_code=error.status_code,
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        # The one error shape of this API ({"error", "detail"}), also for path/query parameter errors.
        # Never the input itself: it may be huge, or hold a lone surrogate that cannot be encoded.
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return JSONResponse({"error": "invalid_request", "detail": printable(detail)}, status_code=422)

    return app
