"""Housekeeping of a Redis state store: drop finished federations' namespaces (simulations, demos)."""

from __future__ import annotations

import redis


def namespaces(client: redis.Redis, prefix: str) -> dict[str, int]:
    """Namespaces (the key part before the first ':') that start with `prefix`, with their key counts."""
    counts: dict[str, int] = {}
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        name = (key.decode() if isinstance(key, bytes) else key).split(":", 1)[0]
        counts[name] = counts.get(name, 0) + 1
    return counts


def drop_namespace(client: redis.Redis, namespace: str) -> int:
    """Delete every key of one namespace; returns how many were deleted."""
    if not namespace or any(c in namespace for c in "*?[]:"):
        raise ValueError(f"not a namespace name: {namespace!r}")
    deleted, batch = 0, []
    for key in client.scan_iter(match=f"{namespace}:*", count=1000):
        batch.append(key)
        if len(batch) == 500:
            deleted += int(client.unlink(*batch))
            batch = []
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted
