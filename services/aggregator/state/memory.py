"""In-memory state store: the reference implementation of the interface, for simulations and unit tests."""

from __future__ import annotations

import copy
import threading
from collections import deque

from services.aggregator.scores import UpdateScores
from services.aggregator.state.base import (
    DecisionRecord,
    Enrollment,
    PruneReport,
    RoundPhase,
    RoundRecord,
    StateStore,
    StateStoreError,
    retention_plan,
)
from shared.lora_state import LoraState
from shared.updates import ClientUpdate


class InMemoryStateStore(StateStore):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._globals: dict[int, LoraState] = {}
        self._rounds: dict[int, RoundRecord] = {}
        self._updates: dict[int, dict[str, ClientUpdate]] = {}
        self._decisions: list[DecisionRecord] = []
        self._scores: dict[int, dict[str, UpdateScores]] = {}  # frozen: shared without copies
        self._trust: dict[str, dict[str, object]] = {}
        self._clients: dict[str, str] = {}
        self._enrollments: dict[str, tuple[str | None, str | None]] = {}  # hash -> (bound to, used by)
        self._registrations: deque[float] = deque()  # admitted open registrations' times

    def put_global(self, version: int, state: LoraState) -> None:
        with self._lock:
            if version in self._globals:
                raise StateStoreError(f"global version {version} already exists")
            self._globals[version] = {k: v.copy() for k, v in state.items()}

    def get_global(self, version: int | None = None) -> tuple[int, LoraState]:
        with self._lock:
            if not self._globals:
                raise StateStoreError("no global adapter stored yet")
            version = max(self._globals) if version is None else version
            if version not in self._globals:
                raise StateStoreError(f"no global version {version}")
            return version, {k: v.copy() for k, v in self._globals[version].items()}

    def open_round(self, record: RoundRecord) -> RoundRecord:
        with self._lock:
            existing = self._rounds.setdefault(record.round_index, copy.deepcopy(record))
            self._updates.setdefault(record.round_index, {})
            return copy.deepcopy(existing)

    def get_round(self, round_index: int) -> RoundRecord | None:
        with self._lock:
            record = self._rounds.get(round_index)
            return copy.deepcopy(record) if record else None

    def add_update(self, update: ClientUpdate) -> tuple[str, bool]:
        update_id = update.content_hash()
        with self._lock:
            record = self._rounds.get(update.round_index)
            if record is None:
                raise StateStoreError(f"round {update.round_index} is not open")
            updates = self._updates[update.round_index]
            if update_id in updates:  # a retry of an accepted update, even after the close
                return update_id, False
            if record.phase is not RoundPhase.OPEN:  # a straggler: the client moves on to the next round
                raise StateStoreError(f"round {update.round_index} closed: it accepts no more updates")
            if update.client_id not in record.sampled:
                raise StateStoreError(f"{update.client_id} was not sampled in round {update.round_index}")
            if any(u.client_id == update.client_id for u in updates.values()):
                raise StateStoreError(f"{update.client_id} already submitted a different update this round")
            updates[update_id] = update
            return update_id, True

    def update_ids(self, round_index: int) -> list[str]:
        with self._lock:
            return list(self._updates.get(round_index, {}))

    def round_clients(self, round_index: int) -> dict[str, str]:
        with self._lock:
            return {i: u.client_id for i, u in self._updates.get(round_index, {}).items()}

    def get_update(self, update_id: str) -> ClientUpdate:
        with self._lock:
            for updates in self._updates.values():
                if update_id in updates:
                    return updates[update_id]
        raise StateStoreError(f"no update {update_id}")

    def latest_round(self) -> int | None:
        with self._lock:
            return max(self._rounds) if self._rounds else None

    def put_scores(self, round_index: int, update_id: str, scores: UpdateScores) -> None:
        with self._lock:
            self._scores.setdefault(round_index, {})[update_id] = scores

    def get_scores(self, round_index: int) -> dict[str, UpdateScores]:
        with self._lock:
            return dict(self._scores.get(round_index, {}))

    def get_trust(self) -> dict[str, dict[str, object]]:
        with self._lock:
            return copy.deepcopy(self._trust)

    def register_client(self, client_id: str, token_hash: str) -> bool:
        with self._lock:
            if client_id in self._clients:
                return False
            self._clients[client_id] = token_hash
            return True

    def add_enrollments(self, entries: dict[str, str | None]) -> int:
        with self._lock:
            new = {h: (c, None) for h, c in entries.items() if h not in self._enrollments}
            self._enrollments.update(new)
            return len(new)

    def enroll_client(self, client_id: str, token_hash: str, enrollment_hash: str) -> Enrollment:
        with self._lock:
            if enrollment_hash not in self._enrollments:
                return Enrollment.UNKNOWN
            bound, used = self._enrollments[enrollment_hash]
            if used is not None:
                return Enrollment.USED
            if bound is not None and bound != client_id:
                return Enrollment.BOUND
            if client_id in self._clients:
                return Enrollment.EXISTS
            self._enrollments[enrollment_hash] = (bound, client_id)
            self._clients[client_id] = token_hash
            return Enrollment.CREATED

    def admit_registration(self, now: float, window_s: float, limit: int) -> float | None:
        with self._lock:
            times = self._registrations
            while times and times[0] <= now - window_s:
                times.popleft()
            if len(times) >= limit:
                return times[0] + window_s - now  # when the oldest admitted one leaves the window
            times.append(now)
            return None

    def client_token_hash(self, client_id: str) -> str | None:
        with self._lock:
            return self._clients.get(client_id)

    def registered_clients(self) -> list[str]:
        with self._lock:
            return sorted(self._clients)

    def begin_close(self, round_index: int) -> RoundRecord:
        with self._lock:
            record = self._rounds.get(round_index)
            if record is None:
                raise StateStoreError(f"round {round_index} was never opened")
            if record.phase not in (RoundPhase.OPEN, RoundPhase.CLOSING):
                raise StateStoreError(f"round {round_index} is already {record.phase.value}")
            record.phase = RoundPhase.CLOSING
            return copy.deepcopy(record)

    def close_round(
        self,
        round_index: int,
        phase: RoundPhase,
        new_version: int,
        state: LoraState,
        decisions: list[DecisionRecord],
        trust: dict[str, dict[str, object]] | None = None,
    ) -> None:
        with self._lock:
            record = self._rounds.get(round_index)
            if record is None or record.phase is not RoundPhase.CLOSING:
                raise StateStoreError(f"round {round_index} is not closing")
            if new_version in self._globals:
                raise StateStoreError(f"global version {new_version} already exists")
            self._globals[new_version] = {k: v.copy() for k, v in state.items()}
            self._decisions.extend(copy.deepcopy(decisions))
            self._trust.update(copy.deepcopy(trust or {}))
            record.phase, record.result_version = phase, new_version

    def prune_rounds(self, keep: int) -> PruneReport:
        with self._lock:
            latest = max(self._globals) if self._globals else None
            dropped, versions, _ = retention_plan(list(self._rounds.values()), keep, latest)
            rounds = [r for r in dropped if self._updates.get(r) or r in self._scores]
            count = sum(len(self._updates.get(r, {})) for r in rounds)
            for r in rounds:
                self._updates[r] = {}
                self._scores.pop(r, None)
            gone = sorted(v for v in versions if v in self._globals)
            for v in gone:
                del self._globals[v]
            return PruneReport(tuple(rounds), tuple(gone), count)

    def append_decisions(self, records: list[DecisionRecord]) -> None:
        with self._lock:
            self._decisions.extend(copy.deepcopy(records))

    def decision_log(self) -> list[DecisionRecord]:
        with self._lock:
            return copy.deepcopy(self._decisions)
