"""Shadow level: the client retrains the round's subset from the fixed init θ^0 at a fixed lr; the probe
scores those shadow steps (in distribution for a probe trained from θ^0, whatever the round).

ρ = min(n, b · flagged shadow steps) / n; s = (1 − ρ)^η with η = 7. No memory across rounds.
"""

from __future__ import annotations

from services.aggregator.defenses.base import ClientDecision, Defense, NoTrust, ProbeEvidence, TrustJson
from services.aggregator.inputs import Inputs


class ShadowLevel(Defense):
    name = "shadow"
    inputs = Inputs.SHADOW

    def shadow_factor(self, evidence: ProbeEvidence) -> tuple[float, list[float], str]:
        scores, note = self.scores_or_policy(evidence.shadow_scores, evidence)
        rho = self.flagged_ratio(scores, evidence)
        return (
            (1 - rho) ** self.settings.shadow_exponent,
            scores,
            f"rho={rho:.3f}" + (f"; {note}" if note else ""),
        )

    def decide_client(self, round_index: int, evidence: ProbeEvidence, trust: TrustJson) -> ClientDecision:
        factor, _, reason = self.shadow_factor(evidence)
        return ClientDecision(factor, NoTrust(), reason)
