"""Step level: every local step is probed; Beta-Bernoulli trust with exponential forgetting.

m = min(n, b · flagged steps); α ← γα + (n − m); β ← γβ + m (from α = β = 1); s = α / (α + β).
From round R_p on the probe is no longer run and s stays at the client's last value; a client first seen
then gets the prior mean 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.aggregator.defenses.base import (
    ClientDecision,
    Defense,
    NoTrust,
    ProbeEvidence,
    TrustJson,
    json_float,
)
from services.aggregator.inputs import Inputs


@dataclass(frozen=True)
class StepTrust:
    """The Beta counts of a client's benign (alpha) and harmful (beta) samples, forgotten by gamma."""

    alpha: float = 1.0
    beta: float = 1.0

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def to_json(self) -> dict[str, object]:
        return {"alpha": self.alpha, "beta": self.beta}

    @classmethod
    def from_json(cls, data: TrustJson) -> StepTrust:
        return cls(json_float(data, "alpha", 1.0), json_float(data, "beta", 1.0))


class StepLevel(Defense):
    name = "step"
    inputs = Inputs.STEPS

    def needs_scores(self, round_index: int, trust: TrustJson) -> bool:
        return round_index < self.settings.freeze_round

    def decide_client(self, round_index: int, evidence: ProbeEvidence, trust: TrustJson) -> ClientDecision:
        state = StepTrust.from_json(trust)
        if round_index >= self.settings.freeze_round:  # unchanged; an unseen client stays unseen ({})
            return ClientDecision(state.mean, state if trust else NoTrust(), "frozen", probed=False)
        scores, note = self.scores_or_policy(evidence.step_scores, evidence)
        n = evidence.num_samples
        harmful = self.flagged_ratio(scores, evidence) * n
        gamma = self.settings.time_decay
        state = StepTrust(gamma * state.alpha + (n - harmful), gamma * state.beta + harmful)
        reason = f"{self.flagged_steps(scores)}/{len(self.scored(scores))} scored steps flagged" + (
            f"; {note}" if note else ""
        )
        return ClientDecision(state.mean, state, reason)
