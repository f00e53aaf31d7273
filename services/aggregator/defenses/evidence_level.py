"""Evidence level (official code only, `_evidence_level` / `use_shadow`): the shadow factor plus an
evidence record that freezes clients, so that frozen clients can skip the shadow branch.

Each probed round appends {factor, malicious = last shadow step flagged}. When the last E records agree,
an all-malicious client is frozen at weight 0 for good and never trains a shadow branch again; an
all-benign one is frozen at the mean of those factors. A frozen-benign client's participations are
counted from the moment it is frozen: the `reprobe_interval`-th one after (5 by default) is an audit, with a
shadow branch; a passed audit restarts the count, a flagged one unfreezes the client with weight 0 for
that round and restarts its evidence. Disagreeing records reset the evidence. Between audits the client
is told not to train the shadow branch (`needs_shadow`), which is the level's compute saving.
Departure: the official code's `use_shadow` falls back to an interval of 10 where `_evidence_level`
falls back to 5 when none is configured; here one setting serves both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from services.aggregator.defenses.base import ClientDecision, ProbeEvidence, TrustJson, json_float, json_int
from services.aggregator.defenses.shadow_level import ShadowLevel
from services.aggregator.inputs import Inputs


@dataclass(frozen=True)
class EvidenceRecord:
    """One probed round: its shadow factor and whether the last shadow step was flagged."""

    factor: float
    malicious: bool


@dataclass(frozen=True)
class EvidenceTrust:
    """The evidence records of a client and, once the last E agree, what it is frozen as."""

    records: tuple[EvidenceRecord, ...] = ()
    frozen: Literal["malicious", "benign"] | None = None
    frozen_factor: float = 0.0  # the mean factor of the agreeing records (frozen benign)
    since_frozen: int = 0  # participations since the freeze or the last passed re-probe (frozen benign)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.frozen is not None:
            out["frozen"] = self.frozen
        if self.frozen == "benign":
            out |= {"frozen_factor": self.frozen_factor, "since_frozen": self.since_frozen}
        out["records"] = [{"factor": r.factor, "malicious": r.malicious} for r in self.records]
        return out

    @classmethod
    def from_json(cls, data: TrustJson) -> EvidenceTrust:
        frozen = data.get("frozen")
        if frozen not in (None, "malicious", "benign"):
            raise ValueError(f"trust state: frozen={frozen!r}")
        raw = data.get("records", [])
        if not isinstance(raw, Sequence) or not all(isinstance(r, dict) for r in raw):
            raise ValueError("trust state: records is not a list of records")
        records = tuple(EvidenceRecord(json_float(r, "factor", 0.0), bool(r.get("malicious"))) for r in raw)
        benign = frozen == "benign"
        return cls(
            records,
            "benign" if benign else "malicious" if frozen else None,
            json_float(data, "frozen_factor", 0.0) if benign else 0.0,
            json_int(data, "since_frozen", 0) if benign else 0,
        )


class EvidenceLevel(ShadowLevel):
    name = "evidence"
    inputs = Inputs.SHADOW

    def needs_scores(self, round_index: int, trust: TrustJson) -> bool:
        state = EvidenceTrust.from_json(trust)
        if state.frozen == "malicious":
            return False
        if state.frozen == "benign":
            return state.since_frozen + 1 >= self.settings.reprobe_interval
        return True

    def decide_client(self, round_index: int, evidence: ProbeEvidence, trust: TrustJson) -> ClientDecision:
        state = EvidenceTrust.from_json(trust)
        if state.frozen == "malicious":
            return ClientDecision(0.0, state, "frozen malicious", probed=False)
        if state.frozen == "benign":
            count = state.since_frozen + 1
            if count < self.settings.reprobe_interval:
                return ClientDecision(
                    state.frozen_factor, replace(state, since_frozen=count), "frozen benign", probed=False
                )
            _, scores, reason = self.shadow_factor(evidence)
            if scores[-1] >= self.settings.threshold:
                return ClientDecision(0.0, EvidenceTrust(), f"audit flagged; {reason}")
            return ClientDecision(
                state.frozen_factor, replace(state, since_frozen=0), f"audit passed; {reason}"
            )
        factor, scores, reason = self.shadow_factor(evidence)
        malicious = scores[-1] >= self.settings.threshold
        records = (*state.records, EvidenceRecord(factor, bool(malicious)))
        window = records[-self.settings.evidence_window :]
        if len(window) == self.settings.evidence_window:
            verdicts = {r.malicious for r in window}
            if verdicts == {True}:
                return ClientDecision(0.0, EvidenceTrust(window, "malicious"), "frozen malicious")
            if verdicts == {False}:
                mean = sum(r.factor for r in window) / len(window)
                return ClientDecision(
                    mean, EvidenceTrust(window, "benign", mean, 0), f"frozen benign at {mean:.3f}"
                )
            records = ()  # disagreement resets the evidence
        return ClientDecision(factor, EvidenceTrust(records), reason)
