"""The aggregator's refusals, each with the HTTP status the API answers it with."""

from __future__ import annotations


class AggregatorError(Exception):
    status_code = 400


class RoundConflict(AggregatorError):
    """Wrong round, or a round that is not open (409)."""

    status_code = 409


class Forbidden(AggregatorError):
    status_code = 403


class InvalidSubmission(AggregatorError):
    status_code = 422


class RefusedUpdate(InvalidSubmission):
    """A submission a server-side check refused (verification.py); `check` labels the metric."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


class NotFound(AggregatorError):
    status_code = 404
