"""The Safe-FedLLM defense levels: probe scores -> per-client security factors (pure, one file per level).

`gate.gated_fedavg` turns the factors into the aggregate: FedAvg weighted by n_i · max(s_i, s_min), skipped
when the round's mean factor is below κ. Each level types its per-client trust state (a frozen dataclass:
StepTrust, MeanTrust, EvidenceTrust, AuditedTrust); the store keeps its JSON (base.py).
"""

from services.aggregator.defenses.audit_level import AUDIT_LEVELS, AuditEvidence, AuditLevelSettings
from services.aggregator.defenses.base import Defense, DefenseDecision, DefenseSettings, ProbeEvidence
from services.aggregator.defenses.client_level import ClientLevel
from services.aggregator.defenses.combined import defended_aggregate
from services.aggregator.defenses.evidence_level import EvidenceLevel
from services.aggregator.defenses.gate import gated_fedavg
from services.aggregator.defenses.shadow_level import ShadowLevel
from services.aggregator.defenses.step_level import StepLevel
from services.aggregator.defenses.verified_level import VerifiedLevel

_LEVELS: tuple[type[Defense], ...] = (
    StepLevel,
    ClientLevel,
    ShadowLevel,
    EvidenceLevel,
    VerifiedLevel,
    *AUDIT_LEVELS,
)
DEFENSES: dict[str, type[Defense]] = {cls.name: cls for cls in _LEVELS}


def make_defense(name: str, settings: DefenseSettings | None = None) -> Defense:
    try:
        return DEFENSES[name](settings or DefenseSettings())
    except KeyError:
        raise ValueError(f"Unknown defense {name!r}; available: {', '.join(sorted(DEFENSES))}") from None


__all__ = [
    "DEFENSES",
    "AuditEvidence",
    "AuditLevelSettings",
    "ClientLevel",
    "Defense",
    "DefenseDecision",
    "DefenseSettings",
    "EvidenceLevel",
    "ProbeEvidence",
    "ShadowLevel",
    "StepLevel",
    "VerifiedLevel",
    "defended_aggregate",
    "gated_fedavg",
    "make_defense",
]
