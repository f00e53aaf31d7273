"""The state-store interface of the aggregator.

Everything a round needs to resume after a crash is here: the round record (sampled clients, starting
global version), accepted updates (idempotent by content hash), global adapter versions and the audit log.
Closing a round (new version + audit + phase) is one atomic transition.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum

from shared.lora_state import LoraState
from shared.updates import ClientUpdate


class StateStoreError(RuntimeError):
    pass


class RoundPhase(StrEnum):
    OPEN = "open"
    AGGREGATED = "aggregated"
    SKIPPED = "skipped"


@dataclass
class RoundRecord:
    round_index: int
    sampled: list[str]
    global_version: int  # the adapter version clients start from
    lr: float
    phase: RoundPhase = RoundPhase.OPEN
    result_version: int | None = None


@dataclass
class AuditRecord:
    round_index: int
    client_id: str
    decision: str  # "aggregated" | "dropped" | "skipped"
    weight: float
    factor: float = 1.0
    score: float | None = None
    reason: str = ""
    extra: dict[str, object] = field(default_factory=dict)


class StateStore(ABC):
    @abstractmethod
    def put_global(self, version: int, state: LoraState) -> None: ...

    @abstractmethod
    def get_global(self, version: int | None = None) -> tuple[int, LoraState]:
        """(version, state); None means the latest. Raises StateStoreError when there is none."""

    @abstractmethod
    def open_round(self, record: RoundRecord) -> RoundRecord:
        """Create the round, or return the existing record unchanged (resume after a crash)."""

    @abstractmethod
    def get_round(self, round_index: int) -> RoundRecord | None: ...

    @abstractmethod
    def add_update(self, update: ClientUpdate) -> tuple[str, bool]:
        """Store an update for its round; returns (update id, created). A duplicate returns created=False."""

    @abstractmethod
    def list_updates(self, round_index: int) -> list[ClientUpdate]:
        """Accepted updates of a round, in acceptance order."""

    @abstractmethod
    def close_round(
        self,
        round_index: int,
        phase: RoundPhase,
        new_version: int,
        state: LoraState,
        audit: list[AuditRecord],
    ) -> None:
        """Atomically: store the new global version, append the audit records and mark the round closed."""

    @abstractmethod
    def audit_log(self) -> list[AuditRecord]: ...
