"""`safe-fedllm serve`: the probe service on a local (or SAFE_FEDLLM_RAY_ADDRESS) Ray."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from services.cli.serving import serve_until_stopped


def serve(
    host: str = typer.Option("127.0.0.1", help="HTTP bind address."),
    port: int = typer.Option(8000, help="HTTP port."),
    artifacts: Path | None = typer.Option(None, help="Probe registry directory (default: shipped probes)."),
    min_replicas: int = typer.Option(1, help="Fewest probe replicas."),
    max_replicas: int = typer.Option(4, help="Most probe replicas."),
    detach: bool = typer.Option(
        False,
        help="Return after deploying (with SAFE_FEDLLM_RAY_ADDRESS; a local Ray stops with this process).",
    ),
) -> None:
    """Start the probe service (Ray Serve + FastAPI) and print its URL; Ctrl-C stops it."""
    from services.probe_service.deployment import replica_counts, start_probe_service
    from services.probe_service.settings import AutoscalingSettings, ProbeServiceSettings

    overrides: dict = {"host": host, "port": port}
    if artifacts is not None:
        overrides["artifacts_dir"] = artifacts
    scaling = ProbeServiceSettings().scorer_autoscaling.model_dump()
    scaling.update(min_replicas=min_replicas, max_replicas=max_replicas)
    settings = ProbeServiceSettings(**overrides, scorer_autoscaling=AutoscalingSettings(**scaling))
    url = start_probe_service(settings)
    typer.echo(f"probe service: {url}  (OpenAPI docs: {url}/docs, replicas: {replica_counts(settings)})")
    if detach:
        sys.stdout.flush()
        return
    serve_until_stopped()
