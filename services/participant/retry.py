"""When to try a request again: exponential backoff with jitter, or the server's Retry-After."""

from __future__ import annotations

import random

RETRIED_STATUSES = frozenset({429, 502, 503, 504})


def retry_delay(
    attempt: int,
    retry_after: str | None,
    base_s: float = 0.5,
    cap_s: float = 60.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt `attempt + 1` (attempt counts from 0).

    Retry-After (seconds) wins, capped at `cap_s`; otherwise base * 2^attempt, capped, with "full jitter"
    (uniform in [half, all] of it) so a fleet of clients that lost the server together does not return
    together."""
    if retry_after is not None:
        try:
            return min(max(float(retry_after), 0.0), cap_s)
        except ValueError:
            pass  # an HTTP date, or junk: fall back to backoff
    delay = min(base_s * 2**attempt, cap_s)
    return delay * (0.5 + 0.5 * (rng or random).random())
