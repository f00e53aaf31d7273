"""Client level: the last local step is probed; the factor is the running mean of a smooth step of p.

g(p) = ½σ(k(p/c − ½)) for p ≤ c, ½ + ½σ(k((p − c)/(1 − c) − ½)) above; u = 1 − g(p); s = mean of u over
the rounds the client was sampled, frozen from R_p on. An unseen client gets 1.0 (the official code's
fail-open default); missing scores follow the failure policy (the official code uses p = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.aggregator.defenses.base import (
    ClientDecision,
    Defense,
    NoTrust,
    ProbeEvidence,
    TrustJson,
    json_float,
    json_int,
)
from services.aggregator.inputs import Inputs


def smooth_step(p: float, center: float, steepness: float) -> float:
    def sigmoid(z: float) -> float:
        return 1 / (1 + math.exp(-z))

    if p <= center:
        return 0.5 * sigmoid(steepness * (p / center - 0.5))
    return 0.5 + 0.5 * sigmoid(steepness * ((p - center) / (1 - center) - 0.5))


@dataclass(frozen=True)
class MeanTrust:
    """The running mean of u over the rounds a client was scored (client and verified levels)."""

    sum: float = 0.0
    rounds: int = 0

    def add(self, u: float) -> MeanTrust:
        return MeanTrust(self.sum + u, self.rounds + 1)

    @property
    def mean(self) -> float:
        """The mean of u; 1.0 for a client never scored (the official code's fail-open default)."""
        return self.sum / self.rounds if self.rounds else 1.0

    def to_json(self) -> dict[str, object]:
        return {"sum": self.sum, "rounds": self.rounds}

    @classmethod
    def from_json(cls, data: TrustJson) -> MeanTrust:
        return cls(json_float(data, "sum", 0.0), json_int(data, "rounds", 0))


class ClientLevel(Defense):
    name = "client"
    inputs = Inputs.STEPS
    method_fails_open = False

    def needs_scores(self, round_index: int, trust: TrustJson) -> bool:
        return round_index < self.settings.freeze_round

    def decide_client(self, round_index: int, evidence: ProbeEvidence, trust: TrustJson) -> ClientDecision:
        state = MeanTrust.from_json(trust)
        if round_index >= self.settings.freeze_round:  # unchanged; an unseen client stays unseen ({})
            return ClientDecision(state.mean, state if trust else NoTrust(), "frozen", probed=False)
        scores, note = self.scores_or_policy(evidence.step_scores, evidence)
        p = scores[-1]
        u = 1 - smooth_step(p, self.settings.client_center, self.settings.client_steepness)
        state = state.add(u)
        reason = f"last-step p={p:.3f} -> u={u:.3f}" + (f"; {note}" if note else "")
        return ClientDecision(state.mean, state, reason)
