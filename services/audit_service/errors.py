"""Audit-specific errors; the probe service's error family (status code, stable code) is reused."""

from __future__ import annotations

from services.probe_service.errors import ProbeServiceError


class ModelNotHeld(ProbeServiceError):
    """The adapter's base model is not one this service holds."""

    status_code, code = 404, "model_not_held"


class AuditUnavailable(ProbeServiceError):
    status_code, code = 503, "audit_unavailable"
