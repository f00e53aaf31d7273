"""What the probe and the audit said about one update: a typed record, JSON only at the store boundary.

The stored JSON is unchanged: `{"steps": [p...], "shadow": [p...], "verified": [p], "audit": [Δ],
"error": why, "audit_error": why}`, each key present only when set, so rounds stored before this type
load as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace

from services.aggregator.inputs import Inputs

_PROBE_KINDS = (Inputs.STEPS, Inputs.SHADOW, Inputs.VERIFIED)


@dataclass(frozen=True)
class UpdateScores:
    """Probe probabilities per kind (None: not scored), the audit's Δ, and why a call failed."""

    steps: tuple[float, ...] | None = None
    shadow: tuple[float, ...] | None = None
    verified: tuple[float, ...] | None = None
    audit: float | None = None
    error: str | None = None  # the probe call failed after its retries
    audit_error: str | None = None  # the audit call failed after its retries

    @classmethod
    def probed(cls, by_kind: Mapping[Inputs, Sequence[float]]) -> UpdateScores:
        """The probe's scores of each kind it was asked about."""
        values = {Inputs(kind): tuple(float(p) for p in ps) for kind, ps in by_kind.items()}
        return cls(
            steps=values.get(Inputs.STEPS),
            shadow=values.get(Inputs.SHADOW),
            verified=values.get(Inputs.VERIFIED),
        )

    def of(self, kind: Inputs) -> tuple[float, ...] | None:
        """The scores a level reading `kind` uses (the audit level's: its one Δ)."""
        if kind == Inputs.AUDIT:
            return None if self.audit is None else (self.audit,)
        return {Inputs.STEPS: self.steps, Inputs.SHADOW: self.shadow, Inputs.VERIFIED: self.verified}[kind]

    def merged(self, other: UpdateScores) -> UpdateScores:
        """These scores with every field `other` sets (probe and audit results of one update)."""
        return replace(
            self, **{f.name: v for f in fields(other) if (v := getattr(other, f.name)) is not None}
        )

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for kind in _PROBE_KINDS:
            values = self.of(kind)
            if values is not None:
                out[kind.value] = list(values)
        if self.audit is not None:
            out[Inputs.AUDIT.value] = [self.audit]  # a list, as stored since the audit level began
        if self.error is not None:
            out["error"] = self.error
        if self.audit_error is not None:
            out["audit_error"] = self.audit_error
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> UpdateScores:
        """Stored JSON back (keys this type does not know are ignored: they carry nothing it reads)."""

        def floats(key: str) -> tuple[float, ...] | None:
            value = data.get(key)
            if value is None:
                return None
            if not isinstance(value, list | tuple):
                raise ValueError(f"stored scores: {key} is not a list")
            return tuple(float(p) for p in value)

        audit = floats(Inputs.AUDIT.value)
        error, audit_error = data.get("error"), data.get("audit_error")
        return cls(
            steps=floats(Inputs.STEPS.value),
            shadow=floats(Inputs.SHADOW.value),
            verified=floats(Inputs.VERIFIED.value),
            audit=audit[0] if audit else None,
            error=None if error is None else str(error),
            audit_error=None if audit_error is None else str(audit_error),
        )
