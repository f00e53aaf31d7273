"""What the routes share: the probe bank (manifests), the scoring backend, settings and metrics."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from services.probe_service.api.metrics import ServiceMetrics
from services.probe_service.backends import ScoringBackend
from services.probe_service.scoring import ProbeBank
from services.probe_service.settings import ProbeServiceSettings


@dataclass
class ServiceContext:
    bank: ProbeBank
    backend: ScoringBackend
    settings: ProbeServiceSettings
    metrics: ServiceMetrics


def get_context(request: Request) -> ServiceContext:
    return request.app.state.context
