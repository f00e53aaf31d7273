"""Rounds that run themselves: open round r when r-1 closed, close it when every sampled client submitted or
its deadline passed, skip it below `min_updates`, stop after `max_rounds`.

`next_action` is the pure decision; `RoundScheduler` is its loop inside the aggregator's event loop. Only the
holder of the leadership lease (`services.aggregator.leadership`) acts, so a second replica, or a restarted
one whose predecessor's lease has not yet expired, never opens or closes a round twice; the round's opening
time is kept beside the lease in the store, so a restarted leader keeps the same deadline. Every state
transition goes through the service's public `open_round` / `close_round`, as the admin routes do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from services.aggregator.leadership import Lease
    from services.aggregator.service import AggregatorService, RoundSummary

log = logging.getLogger(__name__)


class SchedulerSettings(BaseModel):
    """SAFE_FEDLLM_AGGREGATOR_SCHEDULER__* (off unless `enabled`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(False, description="Open and close rounds without an operator.")
    round_deadline_s: float = Field(
        600.0, gt=0, description="Close an open round this long after it opened, whoever has not submitted."
    )
    min_updates: int = Field(
        1, ge=0, description="A round closing with fewer accepted updates is skipped (global unchanged)."
    )
    max_rounds: int | None = Field(
        None, ge=1, description="Open rounds 0..max_rounds-1, then stop (default: federation.num_rounds)."
    )
    min_clients: int = Field(1, ge=1, description="Registered clients needed before a round opens.")
    poll_interval_s: float = Field(1.0, gt=0, description="How often the leader looks at the round.")
    lease_ttl_s: float = Field(
        15.0, gt=0, description="Leadership lease: a replica that stops renewing loses it after this long."
    )


@dataclass(frozen=True)
class RoundView:
    """What the scheduler knows of the latest round."""

    round_index: int
    open: bool
    sampled: int
    submitted: int  # accepted updates (one per client: a second, different one is refused)
    opened_at: float | None  # when the scheduler first saw it open (None: closed)
    closing: bool = False  # a close began and did not commit (a crash, an outage): it must be resumed


@dataclass(frozen=True)
class Action:
    kind: Literal["open", "close", "wait", "done"]
    round_index: int | None = None
    skip_reason: str | None = None  # a close that must skip the round (below min_updates)
    why: str = ""


def next_action(
    latest: RoundView | None, registered: int, now: float, settings: SchedulerSettings, max_rounds: int
) -> Action:
    """The one thing to do now. Pure: the loop supplies the view, the clock and the registered count."""
    if latest is not None and (latest.open or latest.closing):
        everyone = latest.submitted >= latest.sampled
        late = latest.opened_at is not None and now - latest.opened_at >= settings.round_deadline_s
        if not (everyone or late or latest.closing):
            return Action("wait", latest.round_index, why="round open")
        why = "every sampled client submitted" if everyone else f"{settings.round_deadline_s:g}s deadline"
        if latest.closing:
            why = "resuming a close that began"  # the store accepts no more updates: nothing to wait for
        skip = None
        if latest.submitted < settings.min_updates:
            skip = (
                f"{latest.submitted} of {latest.sampled} sampled clients submitted by the "
                f"{settings.round_deadline_s:g}s deadline; min_updates is {settings.min_updates}"
            )
        return Action("close", latest.round_index, skip, why)
    following = 0 if latest is None else latest.round_index + 1
    if following >= max_rounds:
        return Action("done", following, why=f"max_rounds {max_rounds} reached")
    if registered < settings.min_clients:
        return Action("wait", following, why=f"{registered} of min_clients {settings.min_clients} registered")
    return Action("open", following)


class RoundScheduler:
    """Runs `next_action` while it holds the lease; `on_closed` sees each closed round (metrics)."""

    def __init__(
        self,
        service: AggregatorService,
        lease: Lease,
        on_closed: Callable[[RoundSummary], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service, self.lease, self.on_closed, self.clock = service, lease, on_closed, clock
        self.settings: SchedulerSettings = service.settings.scheduler
        self.max_rounds = self.settings.max_rounds or service.settings.federation.num_rounds
        self._last_wait = ""

    def view(self) -> RoundView | None:
        record = self.service.current_round()
        if record is None:
            return None
        is_open = record.phase.value == "open"
        opened_at = self.lease.opened_at(record.round_index, self.clock()) if is_open else None
        submitted = len(self.service.store.update_ids(record.round_index))
        closing = record.phase.value == "closing"
        return RoundView(record.round_index, is_open, len(record.sampled), submitted, opened_at, closing)

    async def tick(self) -> Action:
        """Look once and act (the caller holds the lease)."""
        latest = await asyncio.to_thread(self.view)
        registered = len(await asyncio.to_thread(self.service.store.registered_clients))
        action = next_action(latest, registered, self.clock(), self.settings, self.max_rounds)
        if action.kind == "open":
            assert action.round_index is not None
            record = await asyncio.to_thread(self.service.open_round, action.round_index)
            await asyncio.to_thread(self.lease.opened_at, record.round_index, self.clock())
            log.info(
                "round %d open: %d sampled, global v%d, lr %.3g",
                record.round_index,
                len(record.sampled),
                record.global_version,
                record.lr,
            )
        elif action.kind == "close":
            assert action.round_index is not None
            async with self._renewing():  # closing awaits scoring: keep the lease meanwhile
                summary = await self.service.close_round(action.round_index, skip_reason=action.skip_reason)
            kept = sum(1 for w in summary.weights.values() if w > 0)
            log.info(
                "round %d %s (%s): %d updates, %d weighted%s",
                summary.round_index,
                summary.phase.value,
                action.why,
                len(summary.train_loss),
                kept,
                f"; {summary.reason}" if summary.reason else "",
            )
            if self.on_closed is not None:
                self.on_closed(summary)
        elif action.kind == "wait" and action.why != self._last_wait:
            log.info("scheduler waits: %s", action.why)
        self._last_wait = action.why if action.kind == "wait" else ""
        return action

    @contextlib.asynccontextmanager
    async def _renewing(self) -> AsyncIterator[None]:
        async def renew() -> None:
            while True:
                await asyncio.sleep(self.settings.lease_ttl_s / 3)
                await asyncio.to_thread(self.lease.acquire)

        task = asyncio.create_task(renew())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set or max_rounds rounds closed; errors are logged and retried, never fatal."""
        from services.aggregator.errors import RoundConflict
        from services.aggregator.state import StateStoreError

        held = False
        try:
            while not stop.is_set():
                try:
                    was_held, held = held, await asyncio.to_thread(self.lease.acquire)
                    if held and not was_held:
                        log.info("scheduler leads (max_rounds %d)", self.max_rounds)
                    if held and (await self.tick()).kind == "done":
                        log.info("scheduler done: %d rounds", self.max_rounds)
                        return
                except (RoundConflict, StateStoreError) as error:  # another actor got there first, or Redis
                    log.warning("scheduler: %s; retrying", error)
                except Exception:  # the loop must outlive any one bad round; the operator sees the trace
                    log.exception("scheduler tick failed; retrying")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.poll_interval_s)
        finally:
            if held:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.lease.release)
