"""How the aggregator uses the behavioural audit: every update under an audit level, and each round's
aggregate before it is committed (the aggregate audit, under any defense), through one auditor and one call
policy. The decisions on per-update scores stay with the audit levels (defenses/audit_level.py)."""

from __future__ import annotations

from collections.abc import Sequence

from services.aggregator.defenses.audit_level import AuditedDefense, AuditLevelSettings
from services.aggregator.defenses.base import Defense
from services.aggregator.scores import UpdateScores
from services.aggregator.scoring import HttpAuditor, UpdateAuditor, audit_update
from services.aggregator.strategies import AggregationResult
from shared.lora_state import LoraState
from shared.updates import ClientUpdate


class AggregatorAudit:
    def __init__(
        self,
        auditor: UpdateAuditor,
        settings: AuditLevelSettings,
        base_model: str,
        *,
        audits_updates: bool,
        fail_closed: bool,
    ) -> None:
        self.auditor, self.settings, self.base_model = auditor, settings, base_model
        self.audits_updates = audits_updates
        self.fail_closed = fail_closed

    @classmethod
    def build(
        cls,
        defense: Defense | None,
        base_model: str,
        fail_closed: bool,
        auditor: UpdateAuditor | None = None,
    ) -> AggregatorAudit | None:
        """The aggregator's audit, or None when neither an audit level nor the aggregate audit is on. Uses
        the given auditor, else the audit service at the settings' URL; refuses to start without one."""
        audits_updates = isinstance(defense, AuditedDefense)
        settings = defense.audit if isinstance(defense, AuditedDefense) else AuditLevelSettings()
        if not audits_updates and settings.aggregate_threshold is None:
            return None
        url = settings.url
        auditor = auditor or (HttpAuditor(url, settings.scoring.timeout_s) if url else None)
        if auditor is None:
            what = f"defense {defense.name!r}" if audits_updates and defense else "the aggregate audit"
            raise ValueError(f"{what} needs an auditor (SAFE_FEDLLM_AUDIT_LEVEL_URL)")
        return cls(auditor, settings, base_model, audits_updates=audits_updates, fail_closed=fail_closed)

    async def score(self, adapter: LoraState, global_state: LoraState) -> UpdateScores:
        """The audit's Δ of `adapter` vs the round's global, or why it is missing."""
        return await audit_update(self.auditor, self.base_model, adapter, global_state, self.settings.scoring)

    @property
    def checks_aggregates(self) -> bool:
        return self.settings.aggregate_threshold is not None

    async def check_aggregate(
        self, result: AggregationResult, global_state: LoraState, updates: Sequence[ClientUpdate]
    ) -> tuple[float | None, AggregationResult]:
        """(Δ, the result to commit): the round skipped when its aggregate erodes the canaries' safety by
        the threshold or more, or when the audit is missing under fail_closed."""
        threshold = self.settings.aggregate_threshold
        assert threshold is not None  # only called when checks_aggregates
        outcome = await self.score(result.state, global_state)
        score = outcome.audit
        if score is None:
            if not self.fail_closed:
                return None, result
            why = f"aggregate audit unavailable ({outcome.audit_error}): closed"
        elif score >= threshold:
            why = f"aggregate audit: Δ={score:.3f} >= {threshold}"
        else:
            return score, result
        return score, AggregationResult.skip(global_state, updates, why)
