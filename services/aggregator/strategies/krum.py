"""Krum, Multi-Krum (Blanchard et al., NeurIPS 2017) and the official code's Krum variant.

All take `num_attackers` (f), the number of Byzantine clients assumed per round: declared by the operator,
or in the simulation the expected number among the sampled clients, round(k · malicious / clients), as
the official code computes it. It is a required option: a silent default f would be an unstated
assumption.

- `krum` (classic): score_i = sum of squared distances from update i to its n − f − 2 nearest others;
  the output is the single update with the lowest score. The paper needs n >= 2f + 3; with fewer clients
  the score uses max(1, n − f − 2) neighbours and the result says the guarantee does not hold.
- `multi_krum` (classic, same paper): the same scores, computed once; the output is the mean of the
  `num_selected` (m, default n − f) lowest-scoring updates.
- `krum_official` (dmqx/Safe-FedLLM `get_krum`): plain (not squared) distances summed over each update's
  n − f nearest, itself included (so n − f − 1 others); the update i* with the lowest sum is chosen and the
  output is the mean of the n − f updates nearest i*, i* included. This is neither classic rule: it averages
  i*'s neighbourhood rather than the best-scored updates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field

from services.aggregator.strategies.base import AggregationResult, Strategy, StrategyOptions
from services.aggregator.strategies.tensors import (
    apply_delta,
    client_deltas,
    pairwise_sq_distances,
    uniform_weights,
)
from shared.lora_state import LoraState
from shared.updates import ClientUpdate


def krum_scores(deltas: np.ndarray, num_attackers: int) -> np.ndarray:
    """Blanchard et al.'s score: squared distances to the n − f − 2 nearest others (at least 1)."""
    n = len(deltas)
    if n == 1:
        return np.zeros(1)
    neighbours = min(max(1, n - num_attackers - 2), n - 1)
    distances = pairwise_sq_distances(deltas)
    np.fill_diagonal(distances, np.inf)
    return np.sort(distances, axis=1)[:, :neighbours].sum(axis=1)


def check_attackers(num_attackers: int) -> None:
    if isinstance(num_attackers, bool) or not isinstance(num_attackers, int) or num_attackers < 0:
        raise ValueError(f"num_attackers must be an integer >= 0, got {num_attackers!r}")


class KrumOptions(StrategyOptions):
    num_attackers: int = Field(description="f: Byzantine clients assumed per round (required).")


class MultiKrumOptions(KrumOptions):
    num_selected: int | None = Field(None, description="m: updates averaged (None: n - f).")


class Krum(Strategy):
    name = "krum"

    def __init__(self, *, num_attackers: int) -> None:
        check_attackers(num_attackers)
        self.num_attackers = num_attackers

    def _selection(self, deltas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = krum_scores(deltas, self.num_attackers)
        return np.argsort(scores, kind="stable")[:1], scores

    def _aggregate(
        self,
        global_state: LoraState,
        updates: Sequence[ClientUpdate],
        factors: Sequence[float] | None,
        round_index: int | None,
    ) -> AggregationResult:
        deltas, layout = client_deltas(global_state, updates)
        n, f = len(updates), self.num_attackers
        selected, scores = self._selection(deltas)
        reason = "" if n >= 2 * f + 3 else f"n={n} < 2f+3={2 * f + 3}: Krum's guarantee does not hold"
        return AggregationResult(
            apply_delta(global_state, layout, deltas[selected].mean(axis=0)),
            uniform_weights(updates, selected.tolist()),
            reason=reason,
            details={"scores": dict(zip([u.client_id for u in updates], scores.tolist(), strict=True))},
        )


class MultiKrum(Krum):
    name = "multi_krum"

    def __init__(self, *, num_attackers: int, num_selected: int | None = None) -> None:
        super().__init__(num_attackers=num_attackers)
        if num_selected is not None and num_selected < 1:
            raise ValueError(f"num_selected must be >= 1, got {num_selected}")
        self.num_selected = num_selected

    def _selection(self, deltas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = krum_scores(deltas, self.num_attackers)
        keep = self.num_selected or max(1, len(deltas) - self.num_attackers)
        return np.argsort(scores, kind="stable")[:keep], scores


class OfficialKrum(Krum):
    name = "krum_official"

    def _selection(self, deltas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(deltas)
        keep = n - self.num_attackers
        if keep < 1:
            raise ValueError(f"krum_official needs n > f; got n={n}, f={self.num_attackers}")
        distances = np.sqrt(pairwise_sq_distances(deltas))
        np.fill_diagonal(distances, 0.0)
        nearest = np.argsort(distances, axis=1, kind="stable")[:, :keep]
        scores = np.take_along_axis(distances, nearest, axis=1).sum(axis=1)
        best = int(np.argmin(scores))
        return np.sort(nearest[best]), scores
