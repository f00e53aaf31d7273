"""The defense interface, its settings (the method's constants as defaults), the probe evidence and the
trust-state contract.

Each level keeps its trust per client as a small frozen dataclass (a `TrustState`); the store keeps JSON.
`decide_client`/`needs_scores` take a client's stored JSON (the store boundary: each level parses it with
its state's `from_json` first) and a decision carries the typed state, whose `to_json()` the store writes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.aggregator.inputs import Inputs
from services.aggregator.strategies import STRATEGIES

FailurePolicy = Literal["fail_closed", "fail_open", "method"]
Combine = Literal["gate", "filter"]


class DefenseSettings(BaseModel):
    """Every constant of the method is a setting; defaults are the official code's values."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float = Field(
        0.8,
        gt=0,
        lt=1,
        description="tau: p >= tau flags a step (method: 0.8; a probe manifest ships a calibrated one).",
    )
    min_step: int = Field(
        1,
        ge=1,
        description=(
            "Steps before this one are not evidence: they integrate too few samples to carry a signal (from "
            "the probe's manifest); each scored step then stands for b * T / (T - min_step + 1) samples."
        ),
    )
    min_weight: float = Field(0.0, ge=0, le=1, description="s_min in n_i * max(s_i, s_min).")
    skip_below: float = Field(0.2, ge=0, le=1, description="kappa: skip the round if mean factor < kappa.")
    freeze_round: int = Field(20, ge=0, description="R_p: step/client trust is frozen from this round on.")
    time_decay: float = Field(0.95, gt=0, le=1, description="gamma: Beta-count forgetting (step level).")
    client_center: float = Field(0.8, gt=0, lt=1, description="Centre of the client-level smooth step.")
    client_steepness: float = Field(10.0, gt=0, description="k of the client-level smooth step.")
    shadow_exponent: float = Field(7.0, gt=0, description="eta in s = (1 - rho)^eta.")
    evidence_window: int = Field(3, ge=1, description="E: agreeing records that freeze a client.")
    reprobe_interval: int = Field(
        5, ge=1, description="Participations between audits of a frozen-benign client."
    )
    aggregator: str = Field(
        "fedavg",
        description=(
            "The rule that aggregates after the level: fedavg (the method: weights n_i * max(s_i, s_min)) "
            "or a robust baseline, whose options are the aggregator's strategy_options."
        ),
    )
    combine: Combine = Field(
        "gate",
        description=(
            "With a robust aggregator: gate (the official code: the level only skips rounds, the robust "
            "rule aggregates every update) or filter (also drops updates whose weight max(s_i, s_min) is 0)."
        ),
    )

    @field_validator("aggregator")
    @classmethod
    def _known_aggregator(cls, name: str) -> str:
        if name not in STRATEGIES:
            raise ValueError(f"unknown aggregator {name!r}; available: {', '.join(sorted(STRATEGIES))}")
        return name

    on_probe_unavailable: FailurePolicy = Field(
        "fail_closed",
        description=(
            "A client whose scores are missing (probe unreachable): fail_closed counts every step as "
            "flagged (the round is then usually skipped by the gate), fail_open as benign, method as the "
            "official code (benign for step/shadow/evidence, p = 1 for client level)."
        ),
    )


@dataclass
class ProbeEvidence:
    """What the probe said about one client's update this round (None: no scores, probe unavailable)."""

    client_id: str
    num_samples: int  # n_i
    batch_size: int  # b: flagged steps count b samples each
    step_scores: Sequence[float] | None = None  # per local step, deltas against the round's global
    shadow_scores: Sequence[float] | None = None  # per shadow step, deltas against the fixed init
    verified_scores: Sequence[float] | None = None  # the submitted adapter vs the round's global (server)


TrustJson = Mapping[str, object]  # one client's trust state as the store keeps it


class TrustState(Protocol):
    """A level's trust in one client, kept by the store between rounds as `to_json()`."""

    def to_json(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class NoTrust:
    """The state of a level without memory across rounds (stored as {})."""

    def to_json(self) -> dict[str, object]:
        return {}


def json_float(data: TrustJson, key: str, default: float) -> float:
    """A number of a stored trust state (a clear error for anything else: the store is ours, but typed)."""
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"trust state: {key}={value!r} is not a number")
    return float(value)


def json_int(data: TrustJson, key: str, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"trust state: {key}={value!r} is not an integer")
    return value


@dataclass
class ClientDecision:
    factor: float
    state: TrustState  # the level's trust in this client after the round
    reason: str
    probed: bool = True

    @property
    def trust(self) -> dict[str, object]:
        """The state as the store keeps it."""
        return self.state.to_json()


@dataclass
class DefenseDecision:
    factors: dict[str, float]
    trust: dict[str, dict[str, object]]  # per client, as the store keeps it
    reasons: dict[str, str]


class Defense(ABC):
    name: str
    inputs: Inputs
    method_fails_open: bool = True  # the official code's behaviour when scores are missing

    def __init__(self, settings: DefenseSettings | None = None) -> None:
        self.settings = settings or DefenseSettings()

    def needs_scores(self, round_index: int, trust: TrustJson) -> bool:
        """Whether this client's update must be scored this round (frozen clients may skip the probe)."""
        return True

    def needs_shadow(self, round_index: int, trust: TrustJson) -> bool:
        """Whether the client must train the shadow branch this round (told in its task). Only a level
        that scores shadow steps needs one, and only for clients it scores."""
        return self.inputs == Inputs.SHADOW and self.needs_scores(round_index, trust)

    @abstractmethod
    def decide_client(self, round_index: int, evidence: ProbeEvidence, trust: TrustJson) -> ClientDecision:
        """This round's factor for one client and its trust state after it (`trust`: the stored JSON)."""

    def decide(
        self, round_index: int, evidence: Sequence[ProbeEvidence], trust: Mapping[str, TrustJson]
    ) -> DefenseDecision:
        decision = DefenseDecision({}, {}, {})
        for item in evidence:
            client = self.decide_client(round_index, item, dict(trust.get(item.client_id, {})))
            decision.factors[item.client_id] = client.factor
            decision.trust[item.client_id] = client.trust
            decision.reasons[item.client_id] = client.reason
        return decision

    def scores_or_policy(
        self, scores: Sequence[float] | None, evidence: ProbeEvidence
    ) -> tuple[list[float], str]:
        """The scores, or stand-ins for every step chosen by the failure policy (and a note saying so)."""
        if scores is not None:
            return [float(p) for p in scores], ""
        policy = self.settings.on_probe_unavailable
        fail_open = policy == "fail_open" or (policy == "method" and self.method_fails_open)
        steps = max(1, math.ceil(evidence.num_samples / max(1, evidence.batch_size)))
        note = f"probe unavailable: {'open' if fail_open else 'closed'}"
        return [0.0 if fail_open else 1.0] * steps, note

    def scored(self, scores: Sequence[float]) -> list[float]:
        """The steps that count as evidence: from min_step on (the last step when there are fewer)."""
        kept = list(scores[self.settings.min_step - 1 :])
        return kept or list(scores[-1:])

    def flagged_steps(self, scores: Sequence[float]) -> int:
        return sum(p >= self.settings.threshold for p in self.scored(scores))

    def flagged_ratio(self, scores: Sequence[float], evidence: ProbeEvidence) -> float:
        """rho = min(n, b' * flagged scored steps) / n; b' = b * T / scored steps (b' = b: the method)."""
        kept = self.scored(scores)
        n = max(1, evidence.num_samples)
        per_step = evidence.batch_size * len(scores) / max(1, len(kept))
        return min(n, per_step * self.flagged_steps(scores)) / n
