"""FLAME (Nguyen et al. 2022): cluster, clip, add noise.

HDBSCAN (min_cluster_size ⌊n/2⌋ + 1, min_samples 1, one cluster allowed) on pairwise cosine distances
keeps the largest cluster; its updates are clipped to the round's median norm, averaged, and Gaussian noise
with σ = noise_factor · median norm is added (seeded). Distances are between updates, not weights as in the
official code: every client shares the global A matrices, which dominate the weight vectors' cosine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.aggregator.strategies.base import AggregationResult, Strategy
from services.aggregator.strategies.norm_clipping import clip_to
from services.aggregator.strategies.tensors import (
    apply_delta,
    client_deltas,
    cosine_similarities,
    uniform_weights,
)
from shared.lora_state import LoraState
from shared.updates import ClientUpdate


def largest_cluster(deltas: np.ndarray) -> np.ndarray:
    """Indices of HDBSCAN's largest cluster (all clients when there are too few to cluster)."""
    from sklearn.cluster import HDBSCAN

    n = len(deltas)
    if n < 3:
        return np.arange(n)
    distances = np.clip(1 - cosine_similarities(deltas), 0, 2)
    labels = HDBSCAN(
        min_cluster_size=n // 2 + 1,
        min_samples=1,
        metric="precomputed",
        allow_single_cluster=True,
        copy=True,
    ).fit_predict(distances)
    clustered = labels[labels >= 0]
    if len(clustered) == 0:
        return np.arange(n)
    biggest = np.bincount(clustered).argmax()
    return np.flatnonzero(labels == biggest)


class Flame(Strategy):
    name = "flame"

    def __init__(self, noise_factor: float = 0.001, seed: int = 2023) -> None:
        self.noise_factor, self.seed = noise_factor, seed

    def aggregate(
        self, global_state: LoraState, updates: Sequence[ClientUpdate], factors: Sequence[float] | None = None
    ) -> AggregationResult:
        deltas, layout = client_deltas(global_state, updates)
        kept = largest_cluster(deltas)
        bound = float(np.median(np.linalg.norm(deltas, axis=1)))
        delta = clip_to(deltas[kept], bound).mean(axis=0)
        rng = np.random.default_rng(self.seed)
        delta = delta + rng.normal(0.0, self.noise_factor * bound, size=delta.shape)
        return AggregationResult(
            apply_delta(global_state, layout, delta),
            uniform_weights(updates, kept.tolist()),
            details={"kept": [updates[i].client_id for i in kept], "clip_bound": bound},
        )
