"""FoolsGold (Fung et al., RAID 2020): down-weight clients whose updates look alike (sybils pushing one goal).

As the official code: cosine similarity of the round's updates, "pardoning" of clients less similar to
others than their partner is, wv = 1 − max similarity, rescaled, logit + 0.5, clipped to [0, 1]; the new
global is the global plus the mean over clients with wv > 0 of wv_i · Δ_i. (The paper accumulates each
client's update history; a per-round version keeps this strategy stateless, like the official code.)
Options: none (the paper's confidence κ is 1, as in the official code).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.aggregator.strategies.base import AggregationResult, Strategy
from services.aggregator.strategies.tensors import apply_delta, client_deltas, cosine_similarities
from shared.lora_state import LoraState
from shared.updates import ClientUpdate


def foolsgold_weights(deltas: np.ndarray, confidence: float = 1.0) -> np.ndarray:
    n = len(deltas)
    if n == 1:
        return np.ones(1)
    cs = cosine_similarities(deltas)
    np.fill_diagonal(cs, 0.0)  # exactly 0 (1 − eye leaves ±1 ulp, and a −ulp max would divide by 0 below)
    max_cs = cs.max(axis=1)
    for i in range(n):
        for j in range(n):
            if i != j and max_cs[i] < max_cs[j]:
                cs[i, j] *= max_cs[i] / max_cs[j]
    wv = np.clip(1 - cs.max(axis=1), 0, 1)
    if wv.max() > 0:
        wv = wv / wv.max()
    wv[wv == 1] = 0.99
    with np.errstate(divide="ignore"):
        wv = confidence * (np.log(wv / (1 - wv)) + 0.5)
    return np.clip(np.nan_to_num(wv, neginf=0.0, posinf=1.0), 0, 1)


class FoolsGold(Strategy):
    name = "foolsgold"

    def _aggregate(
        self,
        global_state: LoraState,
        updates: Sequence[ClientUpdate],
        factors: Sequence[float] | None,
        round_index: int | None,
    ) -> AggregationResult:
        deltas, layout = client_deltas(global_state, updates)
        wv = foolsgold_weights(deltas)
        kept = wv > 0
        if not kept.any():
            return AggregationResult(
                dict(global_state), {u.client_id: 0.0 for u in updates}, True, "FoolsGold zeroed every client"
            )
        delta = (wv[kept, None] * deltas[kept]).mean(axis=0)
        share = np.where(kept, wv, 0) / wv[kept].sum()
        client_weights = {u.client_id: float(w) for u, w in zip(updates, share, strict=True)}
        return AggregationResult(apply_delta(global_state, layout, delta), client_weights)
