"""Which aggregator replica runs the round scheduler: a lease (a Redis key with a TTL) and round start times.

The lease is `SET key holder NX PX ttl`, renewed and released only by its holder (compare-and-act in Lua):
a replica that dies stops renewing and another takes over after the TTL. The opening time of a round is
written once (`SET NX`), so whichever replica leads later measures the same deadline.
"""

from __future__ import annotations

import secrets
from typing import Protocol

import redis

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
OPENED_TTL_S = 30 * 24 * 3600  # start times outlive any round; they expire with the federation


class Lease(Protocol):
    def acquire(self) -> bool:
        """Take or renew the lease; True while this replica holds it."""
        ...

    def release(self) -> None: ...

    def opened_at(self, round_index: int, now: float) -> float:
        """When the round was first seen open (`now` if this is the first time)."""
        ...


class RedisLease:
    def __init__(self, client: redis.Redis, namespace: str, ttl_s: float) -> None:
        self.redis, self.ns = client, namespace
        self.key = f"{namespace}:scheduler:leader"
        self.holder = secrets.token_hex(8)
        self.ttl_ms = max(int(ttl_s * 1000), 1)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self) -> bool:
        return bool(self._renew(keys=[self.key], args=[self.holder, self.ttl_ms]))

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.holder])

    def opened_at(self, round_index: int, now: float) -> float:
        key = f"{self.ns}:scheduler:opened:{round_index}"
        self.redis.set(key, repr(now), nx=True, ex=OPENED_TTL_S)
        stored = self.redis.get(key)
        return float(stored) if stored is not None else now


class LocalLease:
    """One process, no Redis (the in-memory store): always the leader."""

    def __init__(self) -> None:
        self._opened: dict[int, float] = {}

    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        return None

    def opened_at(self, round_index: int, now: float) -> float:
        return self._opened.setdefault(round_index, now)
