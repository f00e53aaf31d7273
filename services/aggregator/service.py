"""The aggregator: clients, rounds, submissions, asynchronous probe scoring, defense and aggregation.

One object serves both the REST API (remote clients) and the Ray simulation, so both take the same path.
Submissions return as soon as the update is stored; scoring runs as a background task per update and
writes its scores to the store. Closing a round first marks it closing (no update is accepted from then
on), waits for the round's scoring (re-scoring whatever a crashed predecessor left unscored), lets the
defense turn scores into factors, aggregates, optionally audits the aggregate (a round that erodes the
canaries' safety is skipped), and commits the new global version, decision records and trust state in one
atomic store transition.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from services.aggregator.admission import Admission
from services.aggregator.auditing import AggregatorAudit
from services.aggregator.defenses import AuditEvidence, DefenseDecision, defended_aggregate, make_defense
from services.aggregator.defenses.base import TrustJson
from services.aggregator.errors import (
    Forbidden,
    NotFound,
    RoundConflict,
)
from services.aggregator.norm_bound import bound_round
from services.aggregator.realignment import Realigner, RealignmentRecord
from services.aggregator.registration import Registrar, digest
from services.aggregator.sampling import sample_clients
from services.aggregator.scores import UpdateScores
from services.aggregator.scoring import (
    PROBE_KINDS,
    UpdateAuditor,
    probe_inputs,
    score_update,
)
from services.aggregator.settings import AggregatorSettings
from services.aggregator.state import (
    DecisionRecord,
    RoundPhase,
    RoundRecord,
    StateStore,
    StateStoreError,
    StoreUnavailable,
)
from services.aggregator.strategies import AggregationResult, make_strategy
from services.aggregator.verification import (
    describe,
    structural_findings,
)
from shared.echo import quoted
from shared.features import FeatureSpec
from shared.lora_state import LoraState
from shared.probe_scorer import ProbeScorer
from shared.updates import ClientUpdate

log = logging.getLogger(__name__)


@dataclass
class RoundSummary:
    round_index: int
    sampled: list[str]
    phase: RoundPhase
    weights: dict[str, float]
    factors: dict[str, float] = field(default_factory=dict)
    scores: dict[str, float | None] = field(default_factory=dict)
    train_loss: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    aggregate_audit: float | None = None  # Δ of the round's aggregate vs the previous global, when audited
    realignment: RealignmentRecord | None = None  # the server's realignment of the aggregate, when on


token_hash = digest


@dataclass(frozen=True)
class UpdateStatus:
    update_id: str
    client_id: str
    scores: dict[str, object] | None  # the stored scores' JSON (scores.py); None: not scored (yet)


@dataclass(frozen=True)
class RoundStatus:
    """A round as operators see it: its record, who submitted (acceptance order) and who is missing."""

    round_index: int
    phase: RoundPhase
    sampled: list[str]
    global_version: int
    result_version: int | None
    lr: float
    updates: list[UpdateStatus]
    missing: list[str]


@dataclass
class Defended:
    """What closing a round decided: the aggregate and, under a defense level, its per-client evidence."""

    result: AggregationResult
    factors: dict[str, float] = field(default_factory=dict)  # security factor per client
    scores: dict[str, float | None] = field(default_factory=dict)  # mean probe score per client
    trust: dict[str, dict[str, object]] = field(default_factory=dict)  # the defense's trust state to store
    reasons: dict[str, str] = field(default_factory=dict)  # why, per client, for the decision log


@dataclass(frozen=True)
class _Closing:
    """A round whose close began, as loaded from the store (the updates after the norm bound, if any)."""

    record: RoundRecord
    ids: list[str]
    updates: list[ClientUpdate]
    global_state: LoraState
    trust: dict[str, dict[str, object]]  # the defense's trust state before this round (empty without a level)


class AggregatorService:
    def __init__(
        self,
        store: StateStore,
        settings: AggregatorSettings,
        initial_state: LoraState | Callable[[], LoraState],
        scorer: ProbeScorer | None = None,
        probe_id: str | None = None,
        probe_spec: FeatureSpec | None = None,
        population: list[str] | None = None,
        auditor: UpdateAuditor | None = None,
    ) -> None:
        settings.validate_defense()
        self.defense = (
            make_defense(settings.defense, settings.defense_settings) if settings.is_level else None
        )
        probed = self.defense is not None and self.defense.inputs in PROBE_KINDS
        if probed and (scorer is None or probe_id is None or probe_spec is None):
            raise ValueError(f"defense {settings.defense!r} needs a probe scorer, probe id and feature spec")
        self.store, self.settings = store, settings
        self.scorer, self.probe_id, self.probe_spec = scorer, probe_id, probe_spec
        self.verification = settings.verification.resolved(settings.is_verified_level)
        self.population = population
        fail_closed = settings.defense_settings.on_probe_unavailable == "fail_closed"
        self.audit = AggregatorAudit.build(self.defense, settings.model, fail_closed, auditor)
        self.strategy = make_strategy(settings.aggregation_rule, **settings.strategy_options)
        realign = settings.realignment
        self.realigner = Realigner(realign, settings.model, settings.lora) if realign.enabled else None
        self._scoring: dict[str, asyncio.Task] = {}
        # Global version 0 is written here and only here: an adapter, or a factory called only when the
        # store has none yet (a restarted aggregator skips loading the base model).
        try:
            store.get_global(0)
        except StateStoreError:
            store.put_global(0, initial_state() if callable(initial_state) else initial_state)
        layout = store.get_global(0)[1]
        self.admission = Admission(
            store, settings, self.defense, layout, self.verification, reads_snapshots=probe_spec is not None
        )
        self.registrar = Registrar(store, settings)
        self.registrar.load_configured_tokens()

    # clients
    def register(self, client_id: str, enrollment_token: str | None = None) -> str:
        """A new client's bearer token, if the registration policy admits it (RegistrationError if not)."""
        return self.registrar.register(client_id, enrollment_token)

    def authenticate(self, client_id: str, token: str) -> None:
        expected = self.store.client_token_hash(client_id)
        if expected is None or not hmac.compare_digest(expected, token_hash(token)):
            raise Forbidden(f"the token does not belong to client {quoted(client_id)}")

    def client_ids(self) -> list[str]:
        """The fixed simulation population, or else every registered client."""
        clients = self.population if self.population is not None else self.store.registered_clients()
        if not clients:
            raise RoundConflict("no clients: register some before opening a round")
        return clients

    # rounds
    def open_round(self, round_index: int) -> RoundRecord:
        existing = self.store.get_round(round_index)
        if existing is not None:
            return existing
        latest = self.store.latest_round()
        previous = self.store.get_round(latest) if latest is not None else None
        if latest is not None and (
            latest >= round_index
            or (previous is not None and previous.phase in (RoundPhase.OPEN, RoundPhase.CLOSING))
        ):
            raise RoundConflict(f"round {round_index} cannot open: round {latest} exists or is still open")
        version, _ = self.store.get_global()
        federation = self.settings.federation
        return self.store.open_round(
            RoundRecord(
                round_index=round_index,
                sampled=sample_clients(
                    self.client_ids(), federation.clients_per_round, federation.seed, round_index
                ),
                global_version=version,
                lr=federation.lr.at_round(round_index, federation.num_rounds),
            )
        )

    def global_blob(self, version: int) -> bytes:
        try:
            return self.store.global_blob(version)
        except StoreUnavailable:
            raise  # an outage is a 503, never a "not found"
        except StateStoreError as error:
            raise NotFound(str(error)) from error

    def round_status(self, round_index: int) -> RoundStatus:
        record = self.store.get_round(round_index)
        if record is None:
            raise NotFound(f"round {round_index} was never opened")
        updates = self.store.round_clients(round_index)  # who submitted, without decoding any adapter
        scores = self.store.get_scores(round_index)
        return RoundStatus(
            round_index=round_index,
            phase=record.phase,
            sampled=record.sampled,
            global_version=record.global_version,
            result_version=record.result_version,
            lr=record.lr,
            updates=[
                UpdateStatus(i, c, s.to_json() if (s := scores.get(i)) else None) for i, c in updates.items()
            ],
            missing=[c for c in record.sampled if c not in updates.values()],
        )

    def trust(self) -> dict[str, dict[str, object]]:
        """Per-client trust state of the defense (for operators)."""
        return self.store.get_trust()

    def decision_log(self) -> list[DecisionRecord]:
        """Who, round, score, factor, decision and why, in order (for operators)."""
        return self.store.decision_log()

    def needs_shadow(self, round_index: int, client_id: str) -> bool:
        """Whether this client must train the shadow branch this round (its task says so)."""
        if self.defense is None:
            return False
        return self.defense.needs_shadow(round_index, self.store.get_trust().get(client_id, {}))

    def current_round(self) -> RoundRecord | None:
        latest = self.store.latest_round()
        return None if latest is None else self.store.get_round(latest)

    # submissions
    async def submit(self, update: ClientUpdate) -> tuple[str, bool]:
        """The one entry point for a submission (the REST route, the simulation): `accept` in a worker
        thread, then, for a new update, its scoring as a background task on this event loop."""

        def accept_and_plan() -> tuple[str, bool, RoundRecord, ClientUpdate, bool | None]:
            update_id, created, record, accepted = self.accept(update)
            return (
                update_id,
                created,
                record,
                accepted,
                self._scoring_plan(accepted, record) if created else None,
            )

        update_id, created, record, accepted, probe = await asyncio.to_thread(accept_and_plan)
        if probe is not None:  # on the loop, where the scoring tasks live (close_round awaits them)
            self._scoring[update_id] = asyncio.ensure_future(self._score(update_id, accepted, record, probe))
        return update_id, created

    def accept(self, update: ClientUpdate) -> tuple[str, bool, RoundRecord, ClientUpdate]:
        """Admit (admission.py) and store an update (blocking I/O: the API runs it in a worker thread)."""
        update, record = self.admission.admit(update)
        try:
            update_id, created = self.store.add_update(update)
        except StoreUnavailable:
            raise  # a 503: the client retries (a 409 would tell it to drop the update)
        except StateStoreError as error:
            raise RoundConflict(str(error)) from error
        return update_id, created, record, update

    def _scoring_plan(self, update: ClientUpdate, record: RoundRecord) -> bool | None:
        """Whether to ask the probe about a new update (None: nothing to score; blocking store read)."""
        if self.defense is None:
            return None
        probe = self._probes(record.round_index, self.store.get_trust().get(update.client_id, {}))
        return probe if probe or self._audits_updates else None

    @property
    def _audits_updates(self) -> bool:
        return self.audit is not None and self.audit.audits_updates

    def _probes(self, round_index: int, trust: TrustJson) -> bool:
        """Whether the level asks the probe about this client's update (an audit level audits every round)."""
        assert self.defense is not None
        return self.defense.inputs in PROBE_KINDS and self.defense.needs_scores(round_index, trust)

    async def _score(
        self, update_id: str, update: ClientUpdate, record: RoundRecord, probe: bool = True
    ) -> UpdateScores:
        _, global_state = await asyncio.to_thread(self.store.get_global, record.global_version)
        scores = UpdateScores()
        defense = self.defense
        assert defense is not None  # scoring starts only under a defense level
        if probe:
            # A probed level has all three (checked in __init__).
            assert self.probe_spec is not None and self.scorer is not None and self.probe_id is not None
            kinds = PROBE_KINDS[defense.inputs]  # features of a whole update: CPU work, off the loop
            inputs = await asyncio.to_thread(probe_inputs, update, self.probe_spec, global_state, kinds)
            probed = await score_update(self.scorer, self.probe_id, inputs, self.settings.scoring)
            scores = scores.merged(probed)
        if self.audit is not None and self.audit.audits_updates:  # an audit level: every update
            scores = scores.merged(await self.audit.score(update.lora_state, global_state))
        await asyncio.to_thread(self.store.put_scores, record.round_index, update_id, scores)
        return scores

    # closing
    async def close_round(self, round_index: int, skip_reason: str | None = None) -> RoundSummary:
        """`skip_reason`: skip the round whatever its updates say (the scheduler's min_updates).

        Only awaiting happens on the event loop (the round's scoring, the aggregate audit): loading,
        deciding, aggregating (Bulyan is O(n³d)), realigning and committing run in worker threads, so the
        API keeps answering while a round closes.
        """
        closing = await asyncio.to_thread(self._begin_closing, round_index)
        stored: dict[str, UpdateScores] = {}
        if self.defense is not None and closing.updates and not skip_reason:
            stored = await self._round_scores(closing)
        outcome = await asyncio.to_thread(self._decide, closing, stored, skip_reason)
        result, aggregate_audit = outcome.result, None
        if self.audit is not None and self.audit.checks_aggregates and not result.skipped:
            aggregate_audit, result = await self.audit.check_aggregate(
                result, closing.global_state, closing.updates
            )
        realignment = None
        if self.realigner is not None and not result.skipped:  # after the audit: it judges the clients' work
            state, realignment = await asyncio.to_thread(self.realigner.realign, result.state, round_index)
            reason = "; ".join(r for r in (result.reason, realignment.note()) if r)
            result = dataclasses.replace(result, state=state, reason=reason)
        outcome = dataclasses.replace(outcome, result=result)
        return await asyncio.to_thread(self._commit, closing, outcome, aggregate_audit, realignment)

    def _begin_closing(self, round_index: int) -> _Closing:
        """Open -> closing, then load the round (blocking: a worker thread)."""
        # From then on the store accepts no update for this round, so the ids read next are final and
        # every acknowledged update is aggregated or logged with a reason.
        try:
            record = self.store.begin_close(round_index)
        except StoreUnavailable:
            raise
        except StateStoreError as error:
            raise RoundConflict(str(error)) from error
        ids = self.store.update_ids(round_index)
        updates = [self.store.get_update(i) for i in ids]
        _, global_state = self.store.get_global(record.global_version)
        if self.verification.over_bound == "clip":  # norm_bound.py: no update moves the global further
            bound = self.verification.norm_bound, self.verification.round_margin
            updates = bound_round(updates, global_state, *bound)
        trust = self.store.get_trust() if self.defense is not None else {}
        return _Closing(record, ids, updates, global_state, trust)

    async def _round_scores(self, closing: _Closing) -> dict[str, UpdateScores]:
        """Every update's scores: stored, awaited from its scoring task, or scored now (after a restart)."""
        record = closing.record
        stored = await asyncio.to_thread(self.store.get_scores, record.round_index)
        for update_id, update in zip(closing.ids, closing.updates, strict=True):
            task = self._scoring.pop(update_id, None)
            if update_id in stored:
                continue
            if task is not None:
                stored[update_id] = await task
                continue
            probe = self._probes(record.round_index, closing.trust.get(update.client_id, {}))
            if probe or self._audits_updates:
                stored[update_id] = await self._score(update_id, update, record, probe)  # after a restart
        return stored

    def _decide(
        self, closing: _Closing, stored: dict[str, UpdateScores], skip_reason: str | None
    ) -> Defended:
        """The aggregate and, under a defense level, the per-client evidence (CPU: a worker thread)."""
        updates, global_state = closing.updates, closing.global_state
        if not updates or skip_reason:
            return Defended(AggregationResult.skip(global_state, updates, skip_reason or "no updates"))
        if self.defense is None:
            return Defended(
                self.strategy.aggregate(global_state, updates, round_index=closing.record.round_index)
            )
        return self._defend(closing, stored)

    def _commit(
        self,
        closing: _Closing,
        outcome: Defended,
        aggregate_audit: float | None,
        realignment: RealignmentRecord | None,
    ) -> RoundSummary:
        """Decision records, the new global version and trust in one transition (blocking: a thread)."""
        record, updates = closing.record, closing.updates
        round_index = record.round_index
        result, factors, scores, reasons = outcome.result, outcome.factors, outcome.scores, outcome.reasons
        phase = RoundPhase.SKIPPED if result.skipped else RoundPhase.AGGREGATED
        decisions = [
            DecisionRecord(
                round_index=round_index,
                client_id=u.client_id,
                decision="skipped"
                if result.skipped
                else ("aggregated" if result.client_weights.get(u.client_id) else "dropped"),
                weight=result.client_weights.get(u.client_id, 0.0),
                factor=factors.get(u.client_id, 1.0),
                score=scores.get(u.client_id),
                reason="; ".join(r for r in (reasons.get(u.client_id, ""), result.reason, u.notes) if r),
            )
            for u in updates
        ]
        try:
            self.store.close_round(
                round_index, phase, record.global_version + 1, result.state, decisions, outcome.trust
            )
        except StoreUnavailable:
            raise  # the round stays closing; the next close resumes it
        except StateStoreError as error:
            raise RoundConflict(str(error)) from error
        if self.settings.retain_rounds is not None:
            self._retain(self.settings.retain_rounds)
        return RoundSummary(
            round_index,
            record.sampled,
            phase,
            result.client_weights,
            factors,
            scores,
            {u.client_id: u.train_loss for u in updates},
            result.reason,
            aggregate_audit,
            realignment,
        )

    def _retain(self, keep: int) -> None:
        """Retention after a commit; a failure leaves the round committed and the next close retries."""
        try:
            report = self.store.prune_rounds(keep)
        except StateStoreError as error:
            log.warning("retention after the round commit failed: %s", error)
            return
        if report.rounds or report.global_versions:
            log.info("retention: dropped rounds %s, versions %s", report.rounds, report.global_versions)

    def _defend(self, closing: _Closing, stored: dict[str, UpdateScores]) -> Defended:
        defense = self.defense
        assert defense is not None
        record, ids, updates, global_state = (
            closing.record,
            closing.ids,
            closing.updates,
            closing.global_state,
        )
        evidence = []
        for update_id, update in zip(ids, updates, strict=True):
            entry = stored.get(update_id, UpdateScores())
            evidence.append(
                AuditEvidence(
                    update.client_id,
                    update.num_samples,
                    self.settings.training.batch_size,  # the task's b, never the client's claim
                    step_scores=entry.steps,
                    shadow_scores=entry.shadow,
                    verified_scores=entry.verified,
                    audit_score=entry.audit,
                )
            )
        decision = defense.decide(record.round_index, evidence, closing.trust)
        if self.verification.structure == "flag":
            self._cap_flagged(decision, updates, global_state)
        result = defended_aggregate(
            global_state, updates, decision.factors, defense.settings, self.strategy, record.round_index
        )
        scores: dict[str, float | None] = {}
        for update_id, update in zip(ids, updates, strict=True):
            values = stored.get(update_id, UpdateScores()).of(defense.inputs)
            scores[update.client_id] = float(np.mean(values)) if values else None
        return Defended(result, decision.factors, scores, decision.trust, decision.reasons)

    def _cap_flagged(self, decision: DefenseDecision, updates: list[ClientUpdate], issued: LoraState) -> None:
        """Structural findings cap a client's factor at flagged_factor (structure=flag), with the reason."""
        steps, cap = self.settings.training.local_steps, self.verification.flagged_factor
        for update in updates:
            findings = structural_findings(update.lora_state, issued, self.verification, steps)
            if findings:
                client = update.client_id
                decision.factors[client] = min(decision.factors[client], cap)
                decision.reasons[client] += f"; structure flagged: {describe(findings)}"
