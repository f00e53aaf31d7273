"""Drives federated rounds of an `AggregatorService` with a client pool (the Ray simulation's loop).

Clients submit through the same `AggregatorService.submit` as remote REST clients do. Every step is in the
store before the next starts, so a restarted orchestrator resumes an open round with the same sampled
clients and global version, trains only the clients whose update is not stored yet, and never counts an
accepted update twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from tqdm.auto import tqdm

from services.aggregator.errors import RefusedUpdate
from services.aggregator.service import AggregatorService, RoundSummary
from services.aggregator.state import RoundPhase, RoundRecord
from shared.lora_state import LoraState
from shared.updates import ClientUpdate


class ClientPool(Protocol):
    @property
    def client_ids(self) -> list[str]: ...

    def train_round(
        self,
        client_ids: Sequence[str],
        global_state: LoraState,
        round_index: int,
        lr: float,
        shadow: Mapping[str, bool] | None = None,
    ) -> list[ClientUpdate]: ...


class RoundOrchestrator:
    def __init__(self, service: AggregatorService, pool: ClientPool) -> None:
        self.service, self.pool = service, pool
        self.store = service.store
        self._loop = asyncio.new_event_loop()

    def run_round(self, round_index: int) -> RoundSummary:
        return self._loop.run_until_complete(self._round(round_index))

    async def _round(self, round_index: int) -> RoundSummary:
        existing = self.store.get_round(round_index)
        if existing and existing.phase is RoundPhase.CLOSING:  # a close crashed midway: finish it
            return await self.service.close_round(round_index)
        if existing and existing.phase is not RoundPhase.OPEN:
            return self._summary_of_closed(existing)
        record = self.service.open_round(round_index)
        _, global_state = self.store.get_global(record.global_version)
        done = set(self.store.round_clients(round_index).values())
        pending = [c for c in record.sampled if c not in done]
        if pending:
            shadow = {c: self.service.needs_shadow(round_index, c) for c in pending}
            for update in self.pool.train_round(pending, global_state, round_index, record.lr, shadow):
                try:
                    await self.service.submit(update)
                except (
                    RefusedUpdate
                ):  # a server check refused it (in the decision log): the round goes on without it
                    continue
        return await self.service.close_round(round_index)

    def run(
        self, on_round: Callable[[RoundSummary], None] | None = None, progress: bool = True
    ) -> list[RoundSummary]:
        summaries = []
        rounds = self.service.settings.federation.num_rounds
        for round_index in tqdm(range(rounds), desc="rounds", unit="round", disable=not progress):
            summary = self.run_round(round_index)
            summaries.append(summary)
            if on_round:
                on_round(summary)
        return summaries

    def close(self) -> None:
        self._loop.close()

    def _summary_of_closed(self, record: RoundRecord) -> RoundSummary:
        entries = [a for a in self.store.decision_log() if a.round_index == record.round_index]
        return RoundSummary(
            record.round_index,
            record.sampled,
            record.phase,
            {a.client_id: a.weight for a in entries},
            {a.client_id: a.factor for a in entries},
            {a.client_id: a.score for a in entries},
        )
