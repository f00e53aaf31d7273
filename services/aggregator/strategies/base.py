"""The strategy interface: a pure function from the round's global state and client updates to a new state."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from shared.lora_state import LoraState
from shared.updates import ClientUpdate


@dataclass
class AggregationResult:
    state: LoraState  # the next global adapter (equal to the input when the round is skipped)
    client_weights: dict[str, float]  # normalised weight each client got (0 for dropped ones)
    skipped: bool = False
    reason: str = ""
    details: dict[str, object] = field(default_factory=dict)

    @classmethod
    def skip(cls, global_state: LoraState, updates: Sequence[ClientUpdate], reason: str) -> AggregationResult:
        """The round left out: the global unchanged, every update weighted 0, and why."""
        return cls(dict(global_state), {u.client_id: 0.0 for u in updates}, skipped=True, reason=reason)


class StrategyOptions(BaseModel):
    """A strategy's options as a typed model, registered with the strategy (strategies.registry): unknown
    options are refused and types are exact (strict: True is not 1, 3.0 is not 3), before the constructor
    checks the values. A strategy without options registers this empty model."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, arbitrary_types_allowed=True)


class Strategy(ABC):
    """Aggregators are stateless between calls; any state a defense keeps lives in the state store.

    `uses_factors`: whether the rule takes Safe-FedLLM security factors as weights. A rule that does not
    refuses them rather than silently ignoring them. `randomised`: whether it draws random numbers; those
    draw them from (seed, round_index), so each round is fresh and a resumed round draws the same.
    """

    name: str
    uses_factors: bool = False
    randomised: bool = False

    def aggregate(
        self,
        global_state: LoraState,
        updates: Sequence[ClientUpdate],
        factors: Sequence[float] | None = None,
        *,
        round_index: int | None = None,
    ) -> AggregationResult:
        """`factors`: optional per-update security factors in [0, 1] (1 = fully trusted)."""
        if factors is not None and not self.uses_factors:
            raise ValueError(f"{self.name} does not weight clients by security factors; got factors")
        if self.randomised and round_index is None:
            raise ValueError(f"{self.name} draws fresh random numbers each round: pass round_index")
        if not updates:
            return AggregationResult.skip(global_state, updates, "no updates")
        return self._aggregate(global_state, updates, factors, round_index)

    @abstractmethod
    def _aggregate(
        self,
        global_state: LoraState,
        updates: Sequence[ClientUpdate],
        factors: Sequence[float] | None,
        round_index: int | None,
    ) -> AggregationResult: ...
