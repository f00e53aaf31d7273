"""The state-store interface of the aggregator (implementations: in-memory, Redis).

Everything a round needs to resume after a crash is here: the round record (sampled clients, starting
global version), accepted updates (idempotent by content hash), global adapter versions and the decision log.
Closing a round is two atomic transitions: `begin_close` (open -> closing: from then on no update is
accepted, so the update list the close reads is final) and `close_round` (closing -> aggregated/skipped:
new version + decisions + trust + phase). A close that crashed in between is resumed by the next close.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum

from services.aggregator.scores import UpdateScores
from shared.lora_state import LoraState
from shared.updates import ClientUpdate, encode_lora_state


class StateStoreError(RuntimeError):
    pass


class StoreUnavailable(StateStoreError):
    """The store cannot be reached right now (the API answers 503 with Retry-After)."""


class Enrollment(StrEnum):
    """Outcome of registering with an operator-issued enrollment token."""

    CREATED = "created"
    EXISTS = "exists"  # the client id is taken (the token stays unused)
    UNKNOWN = "unknown"  # no such token
    USED = "used"  # the token was already spent
    BOUND = "bound"  # the token was issued for another client id


class RoundPhase(StrEnum):
    OPEN = "open"
    CLOSING = "closing"  # a close has begun: no update is accepted any more, the update list is final
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


@dataclass(frozen=True)
class PruneReport:
    """What one retention pass removed (prune_rounds)."""

    rounds: tuple[int, ...] = ()  # finished rounds whose updates, scores and blobs were dropped
    global_versions: tuple[int, ...] = ()  # global adapter versions dropped
    updates: int = 0


@dataclass
class DecisionRecord:
    round_index: int
    client_id: str
    decision: str  # "aggregated" | "dropped" | "skipped" | "refused" (at submission, by a server check)
    weight: float
    factor: float = 1.0
    score: float | None = None
    reason: str = ""
    extra: dict[str, object] = field(default_factory=dict)


def retention_plan(
    rounds: list[RoundRecord], keep: int, latest: int | None
) -> tuple[list[int], set[int], set[int]]:
    """(finished rounds to drop, global versions they reference, versions to keep) for prune_rounds."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    finished = sorted(r.round_index for r in rounds if r.phase is not RoundPhase.OPEN)
    kept = set(finished[-keep:]) | {r.round_index for r in rounds if r.phase is RoundPhase.OPEN}
    versions = {
        r.round_index: {v for v in (r.global_version, r.result_version) if v is not None} for r in rounds
    }
    keep_versions = {0} | ({latest} if latest is not None else set())
    keep_versions |= {v for r in kept for v in versions[r]}
    dropped = [r for r in finished if r not in kept]
    candidates = {v for r in dropped for v in versions[r]}
    return dropped, candidates - keep_versions, keep_versions


class StateStore(ABC):
    def ping(self) -> None:  # noqa: B027 - a default, not an abstract method: in-process stores always answer
        """Raise StoreUnavailable when the store does not answer (readiness)."""

    @abstractmethod
    def prune_rounds(self, keep: int) -> PruneReport:
        """Retention, run after a round commits.

        Drops the updates (adapters, snapshots), scores and client maps of every finished round but the last
        `keep`, and the global versions only those rounds referenced. Never touched: open rounds, the latest
        global, version 0 (the layout every update is checked against), round records (sampled clients,
        versions, phase) and the decision log. Idempotent.
        """

    @abstractmethod
    def put_global(self, version: int, state: LoraState) -> None: ...

    @abstractmethod
    def get_global(self, version: int | None = None) -> tuple[int, LoraState]:
        """(version, state); None means the latest. Raises StateStoreError when there is none."""

    def global_blob(self, version: int) -> bytes:
        """A global version in its wire form (safetensors); stores that hold the bytes return them as is."""
        return encode_lora_state(self.get_global(version)[1])

    @abstractmethod
    def open_round(self, record: RoundRecord) -> RoundRecord:
        """Create the round, or return the existing record unchanged (resume after a crash)."""

    @abstractmethod
    def get_round(self, round_index: int) -> RoundRecord | None: ...

    @abstractmethod
    def add_update(self, update: ClientUpdate) -> tuple[str, bool]:
        """Store an update for its open round; returns (update id, created). A duplicate (this exact update
        was accepted before, even if the round is closing or closed now) returns created=False."""

    @abstractmethod
    def update_ids(self, round_index: int) -> list[str]:
        """Ids of the accepted updates of a round, in acceptance order."""

    @abstractmethod
    def round_clients(self, round_index: int) -> dict[str, str]:
        """Update id -> client id of a round's accepted updates, in acceptance order; reads no adapter.
        Empty for a round never opened, or one whose updates retention dropped."""

    @abstractmethod
    def get_update(self, update_id: str) -> ClientUpdate: ...

    def list_updates(self, round_index: int) -> list[ClientUpdate]:
        """Accepted updates of a round, in acceptance order."""
        return [self.get_update(i) for i in self.update_ids(round_index)]

    @abstractmethod
    def latest_round(self) -> int | None: ...

    @abstractmethod
    def put_scores(self, round_index: int, update_id: str, scores: UpdateScores) -> None:
        """Probe and audit scores of one update (written by the asynchronous scorer; stored as its JSON)."""

    @abstractmethod
    def get_scores(self, round_index: int) -> dict[str, UpdateScores]: ...

    @abstractmethod
    def get_trust(self) -> dict[str, dict[str, object]]:
        """Per-client trust state of the defense (written only when a round closes)."""

    @abstractmethod
    def register_client(self, client_id: str, token_hash: str) -> bool:
        """Record a client's token hash; False if the client is already registered."""

    @abstractmethod
    def add_enrollments(self, entries: dict[str, str | None]) -> int:
        """Store enrollment token hashes (-> the client id each is bound to, or None for any); a hash
        already stored, used or not, is left as it is. Returns how many were new."""

    @abstractmethod
    def enroll_client(self, client_id: str, token_hash: str, enrollment_hash: str) -> Enrollment:
        """Atomically spend an enrollment token and register the client with its token hash."""

    @abstractmethod
    def admit_registration(self, now: float, window_s: float, limit: int) -> float | None:
        """Sliding window: admit one open registration at time `now` if fewer than `limit` were admitted in
        (now - window_s, now] and record it; None when admitted, else the seconds until a slot frees."""

    @abstractmethod
    def client_token_hash(self, client_id: str) -> str | None: ...

    @abstractmethod
    def registered_clients(self) -> list[str]: ...

    @abstractmethod
    def begin_close(self, round_index: int) -> RoundRecord:
        """Atomically mark an open round closing (a closing one stays closing: a crashed close resumes);
        StateStoreError when the round was never opened or is already closed."""

    @abstractmethod
    def close_round(
        self,
        round_index: int,
        phase: RoundPhase,
        new_version: int,
        state: LoraState,
        decisions: list[DecisionRecord],
        trust: dict[str, dict[str, object]] | None = None,
    ) -> None:
        """Atomically: new global version, decision records, trust state, the closing round marked closed."""

    @abstractmethod
    def append_decisions(self, records: list[DecisionRecord]) -> None:
        """Append decisions taken outside a round's close (a submission the server refused)."""

    @abstractmethod
    def decision_log(self) -> list[DecisionRecord]: ...
