"""Client level: the last local step is probed; the factor is the running mean of a smooth step of p.

g(p) = ½σ(k(p/c − ½)) for p ≤ c, ½ + ½σ(k((p − c)/(1 − c) − ½)) above; u = 1 − g(p); s = mean of u over
the rounds the client was sampled, frozen from R_p on. An unseen client gets 1.0 (the official code's
fail-open default); missing scores follow the failure policy (the official code uses p = 1).
"""

from __future__ import annotations

import math

from services.aggregator.defenses.base import ClientDecision, Defense, ProbeEvidence
from services.aggregator.inputs import Inputs


def smooth_step(p: float, center: float, steepness: float) -> float:
    def sigmoid(z: float) -> float:
        return 1 / (1 + math.exp(-z))

    if p <= center:
        return 0.5 * sigmoid(steepness * (p / center - 0.5))
    return 0.5 + 0.5 * sigmoid(steepness * ((p - center) / (1 - center) - 0.5))


class ClientLevel(Defense):
    name = "client"
    inputs = Inputs.STEPS
    method_fails_open = False

    def needs_scores(self, round_index: int, trust: dict) -> bool:
        return round_index < self.settings.freeze_round

    def decide_client(self, round_index: int, evidence: ProbeEvidence, trust: dict) -> ClientDecision:
        total, rounds = trust.get("sum", 0.0), trust.get("rounds", 0)
        if round_index >= self.settings.freeze_round:
            return ClientDecision(total / rounds if rounds else 1.0, trust, "frozen", probed=False)
        scores, note = self.scores_or_policy(evidence.step_scores, evidence)
        p = scores[-1]
        u = 1 - smooth_step(p, self.settings.client_center, self.settings.client_steepness)
        total, rounds = total + u, rounds + 1
        reason = f"last-step p={p:.3f} -> u={u:.3f}" + (f"; {note}" if note else "")
        return ClientDecision(total / rounds, {"sum": total, "rounds": rounds}, reason)
