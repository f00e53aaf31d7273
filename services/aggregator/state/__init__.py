"""Where the aggregator keeps its state: one interface, an in-memory and (later) a Redis implementation."""

from services.aggregator.state.base import AuditRecord, RoundPhase, RoundRecord, StateStore, StateStoreError
from services.aggregator.state.memory import InMemoryStateStore

__all__ = ["AuditRecord", "InMemoryStateStore", "RoundPhase", "RoundRecord", "StateStore", "StateStoreError"]
