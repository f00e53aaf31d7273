"""Step level: every local step is probed; Beta-Bernoulli trust with exponential forgetting.

m = min(n, b · flagged steps); α ← γα + (n − m); β ← γβ + m (from α = β = 1); s = α / (α + β).
From round R_p on the probe is no longer run and s stays at the client's last value; a client first seen
then gets the prior mean 0.5.
"""

from __future__ import annotations

from services.aggregator.defenses.base import ClientDecision, Defense, ProbeEvidence
from services.aggregator.inputs import Inputs


class StepLevel(Defense):
    name = "step"
    inputs = Inputs.STEPS

    def needs_scores(self, round_index: int, trust: dict) -> bool:
        return round_index < self.settings.freeze_round

    def decide_client(self, round_index: int, evidence: ProbeEvidence, trust: dict) -> ClientDecision:
        alpha, beta = trust.get("alpha", 1.0), trust.get("beta", 1.0)
        if round_index >= self.settings.freeze_round:
            return ClientDecision(alpha / (alpha + beta), trust, "frozen", probed=False)
        scores, note = self.scores_or_policy(evidence.step_scores, evidence)
        n = evidence.num_samples
        harmful = self.flagged_ratio(scores, evidence) * n
        gamma = self.settings.time_decay
        alpha, beta = gamma * alpha + (n - harmful), gamma * beta + harmful
        reason = f"{self.flagged_steps(scores)}/{len(self.scored(scores))} scored steps flagged" + (
            f"; {note}" if note else ""
        )
        return ClientDecision(alpha / (alpha + beta), {"alpha": alpha, "beta": beta}, reason)
