"""Verified level: the probe scores Δ = submitted adapter − the round's global, computed by the server.

The feature is `spec.raw(adapter) − spec.raw(global)` over whatever the probe's FeatureSpec reads (`first_B`
today; the whole update once the probe's policy is `all_layers`): the tensors the server will aggregate, not
a snapshot the client reports. Like the client level, p of the last (verified) step maps to
u = 1 − g(p), g the smooth step — centred on the probe's calibrated τ (the client level centres on the
method's 0.8, which differs from τ once a manifest sets it); s = min(u, running mean of u): the mean keeps
a client's history, the min makes each round's verified evidence binding, so trust banked in benign rounds
cannot pay for a harmful one. Never frozen: the probe reads every round (the client level stops at R_p).

Reported step snapshots (their last row verified equal to the adapter at submission) are at most extra
evidence: their flagged ratio ρ gives (1 − ρ)^η as the shadow level does, and s = min(s, that): rows the
server cannot verify may lower a client's trust, never raise it. Missing scores follow the failure policy
(`method`: p = 1, as the client level). Needs no trusted execution: everything it reads is verified.
"""

from __future__ import annotations

from services.aggregator.defenses.base import ClientDecision, Defense, ProbeEvidence, TrustJson
from services.aggregator.defenses.client_level import MeanTrust, smooth_step
from services.aggregator.inputs import Inputs


class VerifiedLevel(Defense):
    name = "verified"
    inputs = Inputs.VERIFIED
    method_fails_open = False

    def decide_client(self, round_index: int, evidence: ProbeEvidence, trust: TrustJson) -> ClientDecision:
        scores, note = self.scores_or_policy(evidence.verified_scores, evidence)
        p = scores[-1]
        u = 1 - smooth_step(p, self.settings.threshold, self.settings.client_steepness)
        state = MeanTrust.from_json(trust).add(u)
        factor = min(u, state.mean)
        reason = f"verified p={p:.3f} -> u={u:.3f}, s={factor:.3f}" + (f"; {note}" if note else "")
        if evidence.step_scores:
            rho = self.flagged_ratio(evidence.step_scores, evidence)
            reported = (1 - rho) ** self.settings.shadow_exponent
            if reported < factor:
                factor = reported
                reason += f"; reported steps rho={rho:.3f} lower it to {reported:.3f}"
        return ClientDecision(factor, state, reason)
