"""The strategy interface: a pure function from the round's global state and client updates to a new state."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.lora_state import LoraState
from shared.updates import ClientUpdate


@dataclass
class AggregationResult:
    state: LoraState  # the next global adapter (equal to the input when the round is skipped)
    client_weights: dict[str, float]  # normalised weight each client got (0 for dropped ones)
    skipped: bool = False
    reason: str = ""
    details: dict[str, object] = field(default_factory=dict)


class Strategy(ABC):
    """Aggregators are stateless between calls; any state a defense keeps lives in the state store."""

    name: str

    @abstractmethod
    def aggregate(
        self, global_state: LoraState, updates: Sequence[ClientUpdate], factors: Sequence[float] | None = None
    ) -> AggregationResult:
        """`factors`: optional per-update security factors in [0, 1] (1 = fully trusted)."""
