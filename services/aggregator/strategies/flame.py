"""FLAME (Nguyen et al., USENIX Security 2022): cluster, clip, add noise.

1. Pairwise cosine distances between the clients' local models; HDBSCAN (min_cluster_size ⌊n/2⌋ + 1,
   min_samples 1, a single cluster allowed) admits the largest cluster (everyone when all are noise).
2. Clipping bound S = median over all n clients of ‖W_i − G‖; each admitted update is scaled by
   min(1, S / ‖W_i − G‖) and the admitted updates are averaged.
3. Gaussian noise N(0, (λ·S)²) is added to the new global, drawn from (seed, round_index): fresh each
   round. λ = `noise_factor`, 0.001 as in the official code.

Options:
- `cluster_on`: "weights" (default, the paper: the local models W_i) or "updates" (W_i − G). Departure
  available because every LoRA client starts from the same global adapter, whose shared part dominates
  the cosine of whole weight vectors; on updates the clustering sees only what the clients changed.
- `clustering`: "paper" (default: HDBSCAN on the precomputed cosine-distance matrix) or "official" (the
  official code: the rows of that matrix clustered as points under HDBSCAN's default Euclidean metric).
- `noise_factor` (λ), `seed`.
Departure: scikit-learn's HDBSCAN, not the hdbscan package the official code imports (same algorithm).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from services.aggregator.strategies.base import AggregationResult, Strategy, StrategyOptions
from services.aggregator.strategies.norm_clipping import clip_to
from services.aggregator.strategies.tensors import (
    apply_delta,
    check_choice,
    client_deltas,
    cosine_similarities,
    round_rng,
    uniform_weights,
)
from shared.lora_state import LoraState
from shared.updates import ClientUpdate

ClusterOn = Literal["weights", "updates"]
Clustering = Literal["paper", "official"]


def largest_cluster(vectors: np.ndarray, clustering: Clustering = "paper") -> np.ndarray:
    """Indices of HDBSCAN's largest cluster over cosine distances (all when too few or all noise)."""
    from sklearn.cluster import HDBSCAN

    n = len(vectors)
    if n < 3:
        return np.arange(n)
    distances = np.clip(1 - cosine_similarities(vectors), 0, 2)
    np.fill_diagonal(distances, 0.0)
    options = {"min_cluster_size": n // 2 + 1, "min_samples": 1, "allow_single_cluster": True, "copy": True}
    if clustering == "paper":
        labels = HDBSCAN(metric="precomputed", **options).fit_predict(distances)
    else:
        labels = HDBSCAN(**options).fit_predict(distances)
    clustered = labels[labels >= 0]
    if len(clustered) == 0:
        return np.arange(n)
    biggest = np.bincount(clustered).argmax()
    return np.flatnonzero(labels == biggest)


class FlameOptions(StrategyOptions):
    noise_factor: float = Field(0.001, description="lambda: noise std lambda * S (S: the clip bound).")
    seed: int = Field(2023, description="Seed of the noise (with the round index).")
    cluster_on: ClusterOn = Field("weights", description="Cluster the adapters (weights) or their updates.")
    clustering: Clustering = Field("paper", description="HDBSCAN on cosine distances, or on their rows.")


class Flame(Strategy):
    name = "flame"
    randomised = True

    def __init__(
        self,
        noise_factor: float = 0.001,
        seed: int = 2023,
        cluster_on: ClusterOn = "weights",
        clustering: Clustering = "paper",
    ) -> None:
        check_choice("cluster_on", cluster_on, ("weights", "updates"))
        check_choice("clustering", clustering, ("paper", "official"))
        if noise_factor < 0:
            raise ValueError(f"noise_factor must be >= 0, got {noise_factor}")
        self.noise_factor, self.seed = noise_factor, seed
        self.cluster_on, self.clustering = cluster_on, clustering

    def _aggregate(
        self,
        global_state: LoraState,
        updates: Sequence[ClientUpdate],
        factors: Sequence[float] | None,
        round_index: int | None,
    ) -> AggregationResult:
        deltas, layout = client_deltas(global_state, updates)
        vectors = deltas + layout.flatten(global_state) if self.cluster_on == "weights" else deltas
        kept = largest_cluster(vectors, self.clustering)
        bound = float(np.median(np.linalg.norm(deltas, axis=1)))
        delta = clip_to(deltas[kept], bound).mean(axis=0)
        assert round_index is not None  # randomised: Strategy.aggregate requires it
        rng = round_rng(self.seed, round_index)
        delta = delta + rng.normal(0.0, self.noise_factor * bound, size=delta.shape)
        return AggregationResult(
            apply_delta(global_state, layout, delta),
            uniform_weights(updates, kept.tolist()),
            details={"kept": [updates[i].client_id for i in kept], "clip_bound": bound},
        )
