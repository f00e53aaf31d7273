"""`safe-fedllm serve-audit`: the audit service on a local (or SAFE_FEDLLM_RAY_ADDRESS) Ray."""

from __future__ import annotations

import sys

import typer

from services.cli.serving import serve_until_stopped


def serve_audit(
    model: list[str] = typer.Option(["smollm2-135m"], help="Base model to hold; repeat for several."),
    host: str = typer.Option("127.0.0.1", help="HTTP bind address."),
    port: int = typer.Option(8000, help="HTTP port (Serve's proxy, shared with the probe service)."),
    route_prefix: str = typer.Option("/audit", help="Route prefix of the app."),
    canaries: int = typer.Option(64, help="Canary questions per audit."),
    min_replicas: int = typer.Option(1, help="Fewest audit replicas."),
    max_replicas: int = typer.Option(2, help="Most audit replicas."),
    detach: bool = typer.Option(
        False,
        help="Return after deploying (with SAFE_FEDLLM_RAY_ADDRESS; a local Ray stops with this process).",
    ),
) -> None:
    """Start the audit service (Ray Serve + FastAPI) and print its URL; Ctrl-C stops it."""
    from services.audit_service.deployment import start_audit_service
    from services.audit_service.settings import AuditServiceSettings
    from services.probe_service.settings import AutoscalingSettings

    defaults = AuditServiceSettings()
    settings = AuditServiceSettings(
        models=tuple(model),
        host=host,
        port=port,
        route_prefix=route_prefix,
        canaries=defaults.canaries.model_copy(update={"size": canaries}),
        autoscaling=AutoscalingSettings(
            **{
                **defaults.autoscaling.model_dump(),
                "min_replicas": min_replicas,
                "max_replicas": max_replicas,
            }
        ),
    )
    url = start_audit_service(settings)
    typer.echo(f"audit service: {url}  (POST {url}/v1/audit; OpenAPI docs: {url}/docs)")
    if detach:
        sys.stdout.flush()
        return
    serve_until_stopped()
