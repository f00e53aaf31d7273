"""Where the aggregator keeps its state: one interface, an in-memory and a Redis implementation."""

from services.aggregator.state.base import (
    DecisionRecord,
    Enrollment,
    PruneReport,
    RoundPhase,
    RoundRecord,
    StateStore,
    StateStoreError,
    StoreUnavailable,
)
from services.aggregator.state.memory import InMemoryStateStore
from services.aggregator.state.redis_store import RedisStateStore, connect

__all__ = [
    "DecisionRecord",
    "Enrollment",
    "InMemoryStateStore",
    "PruneReport",
    "RedisStateStore",
    "RoundPhase",
    "RoundRecord",
    "StateStore",
    "StateStoreError",
    "StoreUnavailable",
    "connect",
]
