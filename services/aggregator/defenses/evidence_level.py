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

from services.aggregator.defenses.base import ClientDecision, ProbeEvidence
from services.aggregator.defenses.shadow_level import ShadowLevel
from services.aggregator.inputs import Inputs


class EvidenceLevel(ShadowLevel):
    name = "evidence"
    inputs = Inputs.SHADOW

    def needs_scores(self, round_index: int, trust: dict) -> bool:
        frozen = trust.get("frozen")
        if frozen == "malicious":
            return False
        if frozen == "benign":
            return trust.get("since_frozen", 0) + 1 >= self.settings.reprobe_interval
        return True

    def decide_client(self, round_index: int, evidence: ProbeEvidence, trust: dict) -> ClientDecision:
        frozen = trust.get("frozen")
        if frozen == "malicious":
            return ClientDecision(0.0, trust, "frozen malicious", probed=False)
        if frozen == "benign":
            count = trust.get("since_frozen", 0) + 1
            if count < self.settings.reprobe_interval:
                return ClientDecision(
                    trust["frozen_factor"], {**trust, "since_frozen": count}, "frozen benign", probed=False
                )
            _, scores, reason = self.shadow_factor(evidence)
            if scores[-1] >= self.settings.threshold:
                return ClientDecision(0.0, {"records": []}, f"audit flagged; {reason}")
            return ClientDecision(
                trust["frozen_factor"], {**trust, "since_frozen": 0}, f"audit passed; {reason}"
            )
        factor, scores, reason = self.shadow_factor(evidence)
        malicious = scores[-1] >= self.settings.threshold
        records = [*trust.get("records", []), {"factor": factor, "malicious": bool(malicious)}]
        window = records[-self.settings.evidence_window :]
        if len(window) == self.settings.evidence_window:
            verdicts = {r["malicious"] for r in window}
            if verdicts == {True}:
                return ClientDecision(0.0, {"frozen": "malicious", "records": window}, "frozen malicious")
            if verdicts == {False}:
                mean = sum(r["factor"] for r in window) / len(window)
                state = {"frozen": "benign", "frozen_factor": mean, "since_frozen": 0, "records": window}
                return ClientDecision(mean, state, f"frozen benign at {mean:.3f}")
            records = []  # disagreement resets the evidence
        return ClientDecision(factor, {"records": records}, reason)
