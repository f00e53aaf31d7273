"""Who may register: clients holding an operator-issued enrollment token (default), or anyone within a
sliding-window rate limit (`open`, for demos: it bounds, but does not stop, Sybil registrations).

Enrollment tokens are single use and stored as SHA-256 hashes; the operator mints them (optionally bound
to one client id) through `POST /v1/admin/enrollments` or loads them from settings at start.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable

from services.aggregator.settings import AggregatorSettings
from services.aggregator.state import Enrollment, StateStore


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class RegistrationError(Exception):
    """Refused registration; status_code and retry_after_s say how the API answers."""

    def __init__(self, status_code: int, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status_code, self.retry_after_s = status_code, retry_after_s


_REFUSALS = {
    Enrollment.EXISTS: (409, "client {client!r} is already registered"),
    Enrollment.UNKNOWN: (403, "unknown enrollment token"),
    Enrollment.USED: (403, "this enrollment token was already used"),
    Enrollment.BOUND: (403, "this enrollment token was issued for another client id"),
}


class Registrar:
    def __init__(
        self, store: StateStore, settings: AggregatorSettings, clock: Callable[[], float] = time.time
    ) -> None:
        self.store, self.settings, self.clock = store, settings, clock

    def load_configured_tokens(self) -> int:
        """Store the tokens from settings (spent ones stay spent); returns how many were new."""
        return self.store.add_enrollments({digest(t): None for t in self.settings.enrollment_tokens})

    def issue(self, count: int = 1, client_id: str | None = None) -> list[str]:
        """Mint single-use enrollment tokens (shown once; only their hashes are stored)."""
        tokens = [secrets.token_urlsafe(24) for _ in range(count)]
        self.store.add_enrollments({digest(t): client_id for t in tokens})
        return tokens

    def register(self, client_id: str, enrollment_token: str | None) -> str:
        """Admit the client under the policy; returns its new bearer token."""
        token = secrets.token_urlsafe(32)
        if self.settings.registration == "open":
            self._within_rate_limit()
            if not self.store.register_client(client_id, digest(token)):
                raise RegistrationError(409, f"client {client_id!r} is already registered")
            return token
        if not enrollment_token:
            raise RegistrationError(
                401,
                "registration needs an enrollment_token issued by the operator (POST /v1/admin/enrollments)",
            )
        outcome = self.store.enroll_client(client_id, digest(token), digest(enrollment_token))
        if outcome is not Enrollment.CREATED:
            status, message = _REFUSALS[outcome]
            raise RegistrationError(status, message.format(client=client_id))
        return token

    def _within_rate_limit(self) -> None:
        # A sliding window (not a fixed one: that lets 2x the limit through across a window edge).
        limit, window_s = self.settings.open_registration_limit, self.settings.open_registration_window_s
        wait_s = self.store.admit_registration(self.clock(), window_s, limit)
        if wait_s is not None:
            raise RegistrationError(
                429, f"open registration is limited to {limit} per {window_s} s", max(1, math.ceil(wait_s))
            )
