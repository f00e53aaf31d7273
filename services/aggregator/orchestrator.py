"""Runs federated rounds over a state store, a client pool and a strategy.

Every step is recorded in the store before the next one starts, so a restarted orchestrator resumes an
open round with the same sampled clients and global version, trains only the clients whose update is not
stored yet, and never counts an accepted update twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from services.aggregator.sampling import sample_clients
from services.aggregator.state import AuditRecord, RoundPhase, RoundRecord, StateStore, StateStoreError
from services.aggregator.strategies import Strategy
from shared.config import LrSchedule
from shared.lora_state import LoraState
from shared.updates import ClientUpdate


class ClientPool(Protocol):
    @property
    def client_ids(self) -> list[str]: ...

    def train_round(
        self, client_ids: Sequence[str], global_state: LoraState, round_index: int, lr: float
    ) -> list[ClientUpdate]: ...


class FederationConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    num_rounds: int = Field(10, ge=1)
    clients_per_round: int = Field(4, ge=1)
    seed: int = 2023
    lr: LrSchedule = LrSchedule()


@dataclass
class RoundSummary:
    round_index: int
    sampled: list[str]
    phase: RoundPhase
    weights: dict[str, float]
    train_loss: dict[str, float]
    reason: str = ""
    details: dict[str, object] = field(default_factory=dict)


class RoundOrchestrator:
    def __init__(
        self,
        store: StateStore,
        strategy: Strategy,
        pool: ClientPool,
        config: FederationConfig,
        initial_state: LoraState,
    ) -> None:
        self.store, self.strategy, self.pool, self.config = store, strategy, pool, config
        try:
            store.get_global(0)
        except StateStoreError:
            store.put_global(0, initial_state)

    def run_round(self, round_index: int) -> RoundSummary:
        existing = self.store.get_round(round_index)
        if existing and existing.phase is not RoundPhase.OPEN:
            return self._summary_of_closed(existing)
        version, global_state = self.store.get_global()
        record = self.store.open_round(
            RoundRecord(
                round_index=round_index,
                sampled=sample_clients(
                    self.pool.client_ids, self.config.clients_per_round, self.config.seed, round_index
                ),
                global_version=version,
                lr=self.config.lr.at_round(round_index, self.config.num_rounds),
            )
        )
        if record.global_version != version:  # resuming a round opened on an older version
            _, global_state = self.store.get_global(record.global_version)
        done = {u.client_id for u in self.store.list_updates(round_index)}
        pending = [c for c in record.sampled if c not in done]
        if pending:
            for update in self.pool.train_round(pending, global_state, round_index, record.lr):
                self.store.add_update(update)
        updates = self.store.list_updates(round_index)
        result = self.strategy.aggregate(global_state, updates)
        phase = RoundPhase.SKIPPED if result.skipped else RoundPhase.AGGREGATED
        audit = [
            AuditRecord(
                round_index=round_index,
                client_id=u.client_id,
                decision="skipped"
                if result.skipped
                else ("aggregated" if result.client_weights.get(u.client_id) else "dropped"),
                weight=result.client_weights.get(u.client_id, 0.0),
                reason=result.reason,
            )
            for u in updates
        ]
        self.store.close_round(round_index, phase, record.global_version + 1, result.state, audit)
        return RoundSummary(
            round_index,
            record.sampled,
            phase,
            result.client_weights,
            {u.client_id: u.train_loss for u in updates},
            result.reason,
            result.details,
        )

    def run(
        self, on_round: Callable[[RoundSummary], None] | None = None, progress: bool = True
    ) -> list[RoundSummary]:
        summaries = []
        for round_index in tqdm(
            range(self.config.num_rounds), desc="rounds", unit="round", disable=not progress
        ):
            summary = self.run_round(round_index)
            summaries.append(summary)
            if on_round:
                on_round(summary)
        return summaries

    def _summary_of_closed(self, record: RoundRecord) -> RoundSummary:
        entries = [a for a in self.store.audit_log() if a.round_index == record.round_index]
        return RoundSummary(
            record.round_index, record.sampled, record.phase, {a.client_id: a.weight for a in entries}, {}
        )
