"""Where the aggregator keeps its state: one interface, an in-memory and a Redis implementation."""

from services.aggregator.state.base import AuditRecord, RoundPhase, RoundRecord, StateStore, StateStoreError
from services.aggregator.state.memory import InMemoryStateStore
from services.aggregator.state.redis_store import RedisStateStore, connect

__all__ = [
    "AuditRecord",
    "InMemoryStateStore",
    "RedisStateStore",
    "RoundPhase",
    "RoundRecord",
    "StateStore",
    "StateStoreError",
    "connect",
]
