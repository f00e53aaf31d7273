"""Errors the probe service reports to callers, each with its HTTP status and a stable code."""

from __future__ import annotations


class ProbeServiceError(Exception):
    status_code = 500
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PayloadTooLarge(ProbeServiceError):
    status_code, code = 413, "payload_too_large"


class UnsupportedMediaType(ProbeServiceError):
    status_code, code = 415, "unsupported_media_type"


class InvalidUpdate(ProbeServiceError):
    """Wrong keys, shapes, dtypes, NaN/Inf, truncated or malformed bodies."""

    status_code, code = 422, "invalid_update"


class ProbeNotFound(ProbeServiceError):
    status_code, code = 404, "probe_not_found"


class ScorerUnavailable(ProbeServiceError):
    """The scoring replicas did not answer; the caller should retry after `retry_after_s`."""

    status_code, code = 503, "scorer_unavailable"
    retry_after_s = 1
