"""Evidence level (official code only): the shadow factor plus an evidence record that freezes clients.

Each round appends {factor, malicious = last shadow step flagged}. When the last E records agree, an all
malicious client is frozen at weight 0 and never probed again; an all benign one is frozen at the mean of
those factors and skips the shadow branch, except for an audit every `audit_interval` participations: a
flagged audit unfreezes it with weight 0 for that round and restarts its evidence. Disagreeing records
reset the evidence.
"""

from __future__ import annotations

from services.aggregator.defenses.base import ClientDecision, ProbeEvidence
from services.aggregator.defenses.shadow_level import ShadowLevel


class EvidenceLevel(ShadowLevel):
    name = "evidence"
    inputs = "shadow"

    def needs_scores(self, round_index: int, trust: dict) -> bool:
        frozen = trust.get("frozen")
        if frozen == "malicious":
            return False
        if frozen == "benign":
            return (trust.get("participations", 0) + 1) % self.settings.audit_interval == 0
        return True

    def decide_client(self, round_index: int, evidence: ProbeEvidence, trust: dict) -> ClientDecision:
        frozen = trust.get("frozen")
        participations = trust.get("participations", 0) + 1
        trust = {**trust, "participations": participations}
        if frozen == "malicious":
            return ClientDecision(0.0, trust, "frozen malicious", probed=False)
        if frozen == "benign" and participations % self.settings.audit_interval:
            return ClientDecision(trust["frozen_factor"], trust, "frozen benign", probed=False)
        factor, scores, reason = self.shadow_factor(evidence)
        malicious = scores[-1] >= self.settings.threshold
        if frozen == "benign":  # an audit
            if malicious:
                return ClientDecision(
                    0.0, {"participations": participations, "records": []}, f"audit flagged; {reason}"
                )
            return ClientDecision(trust["frozen_factor"], trust, f"audit passed; {reason}")
        records = [*trust.get("records", []), {"factor": factor, "malicious": bool(malicious)}]
        window = records[-self.settings.evidence_window :]
        if len(window) == self.settings.evidence_window:
            verdicts = {r["malicious"] for r in window}
            if verdicts == {True}:
                return ClientDecision(
                    0.0, {**trust, "frozen": "malicious", "records": window}, "frozen malicious"
                )
            if verdicts == {False}:
                mean = sum(r["factor"] for r in window) / len(window)
                state = {**trust, "frozen": "benign", "frozen_factor": mean, "records": window}
                return ClientDecision(mean, state, f"frozen benign at {mean:.3f}")
            records = []  # disagreement resets the evidence
        return ClientDecision(factor, {**trust, "records": records}, reason)
