"""Seeded per-round client sampling (OpenFedLLM samples with random.seed(round))."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def sample_clients(client_ids: Sequence[str], per_round: int, seed: int, round_index: int) -> list[str]:
    """`per_round` distinct clients, the same for the same (seed, round); all of them if there are fewer."""
    if per_round < 1:
        raise ValueError("per_round must be at least 1")
    ordered = sorted(client_ids)
    if len(ordered) <= per_round:
        return ordered
    rng = np.random.default_rng([seed, round_index])
    return sorted(ordered[i] for i in rng.choice(len(ordered), size=per_round, replace=False))
