"""Divide-and-Conquer (Shejwalkar & Houmansadr, NDSS 2021, Algorithm 2): spectral outlier removal.

Each of `iterations` (niter) rounds of filtering samples `subsample` (b) coordinates afresh, centres the
updates on them, projects them on the top right-singular vector and marks the ⌊c · f⌋ updates with the
largest squared projection (c = `filter_fraction`, f = `num_attackers`); the output is the mean of the
updates never marked (the intersection of the good sets). Defaults are the paper's and the official
code's: niter = 1, c = 1, b = 10,000.

Options: `num_attackers` (f, required; see Krum), `subsample`, `iterations`, `filter_fraction`, `seed`.
Coordinates are drawn from (seed, round_index): fresh each round, the same when a round is resumed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field

from services.aggregator.strategies.base import AggregationResult, Strategy, StrategyOptions
from services.aggregator.strategies.krum import check_attackers
from services.aggregator.strategies.tensors import apply_delta, client_deltas, round_rng, uniform_weights
from shared.lora_state import LoraState
from shared.updates import ClientUpdate


def dnc_kept(
    deltas: np.ndarray, removed_per_iteration: int, subsample: int, iterations: int, rng: np.random.Generator
) -> list[int]:
    n, dim = deltas.shape
    kept = set(range(n))
    for _ in range(iterations):
        coords = rng.choice(dim, size=min(subsample, dim), replace=False)
        sample = deltas[:, coords]
        centred = sample - sample.mean(axis=0)
        top = np.linalg.svd(centred, full_matrices=False)[2][0]
        outlier = (centred @ top) ** 2
        good = np.argsort(outlier, kind="stable")[: n - removed_per_iteration]
        kept &= set(good.tolist())
    return sorted(kept)


class DnCOptions(StrategyOptions):
    num_attackers: int = Field(description="f: Byzantine clients assumed per round (required).")
    subsample: int = Field(10_000, description="b: coordinates sampled per iteration.")
    iterations: int = Field(1, description="niter: filtering iterations.")
    filter_fraction: float = Field(1.0, description="c: each iteration marks floor(c * f) updates.")
    seed: int = Field(2023, description="Seed of the coordinate sampling (with the round index).")


class DnC(Strategy):
    name = "dnc"
    randomised = True

    def __init__(
        self,
        *,
        num_attackers: int,
        subsample: int = 10_000,
        iterations: int = 1,
        filter_fraction: float = 1.0,
        seed: int = 2023,
    ) -> None:
        check_attackers(num_attackers)
        if subsample < 1 or iterations < 1 or filter_fraction < 0:
            raise ValueError("dnc needs subsample >= 1, iterations >= 1 and filter_fraction >= 0")
        self.num_attackers, self.subsample, self.iterations = num_attackers, subsample, iterations
        self.filter_fraction, self.seed = filter_fraction, seed

    def _aggregate(
        self,
        global_state: LoraState,
        updates: Sequence[ClientUpdate],
        factors: Sequence[float] | None,
        round_index: int | None,
    ) -> AggregationResult:
        deltas, layout = client_deltas(global_state, updates)
        removed = min(int(self.filter_fraction * self.num_attackers), len(updates) - 1)
        assert round_index is not None  # randomised: Strategy.aggregate requires it
        rng = round_rng(self.seed, round_index)
        kept = dnc_kept(deltas, removed, self.subsample, self.iterations, rng)
        reason = "" if kept else "every update was marked: kept all"
        selected = kept or list(range(len(updates)))
        state = apply_delta(global_state, layout, deltas[selected].mean(axis=0))
        return AggregationResult(state, uniform_weights(updates, selected), reason=reason)
