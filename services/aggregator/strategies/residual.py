"""ResidualBase, residual-based reweighting (Fu et al., "Attack-Resistant Federated Learning with
Residual-based Reweighting", arXiv:1912.11464, 2019), as the official code's
IRLS_aggregation_split_restricted.

Per coordinate, with the n client values y sorted and placed at x = 0..n−1:
1. repeated median line: slope = median_a median_{b≠a} (y_(a) − y_(b)) / (a − b), intercept =
   median(y) − slope · (n − 1)/2 (medians average the middle two for an even count, as the code does);
2. each client's value sits at its rank r_i; residual e_i = y_i − (intercept + slope · r_i), standardised
   by τ = 1.4826 · (1 + 5/(n − 1)) · M + 1e-7, M the median of the |e| without the smallest one;
3. weight w_i = min(1, K · h_i / |e_i|) with K = λ·√(2/n) and h_i = √(1 − H_ii), H the hat matrix of
   [1, rank] (a residual of 0 weighs 1);
4. a value with w_i < `thresh` is replaced by the line's value at its rank;
5. each client's confidence is Σ over coordinates of w_i · std_i(w) (sample std across clients),
   normalised by its maximum and squared; the new global is the confidence-weighted mean of the
   (restricted) client models.
Options: `lam` (λ, 2.0) and `thresh` (0.05), the values the official code passes. Works on updates rather
than weights: every step is unchanged by adding the same global to all clients, and updates lose less
precision. The official code processes coordinates in shards of 2000 only to bound memory; so does this.
Departures: rank ties are broken by client order (torch's sort is not stable); with fewer than 3 clients
the line is undefined and the plain mean is returned; if every confidence is 0 (the code divides 0 by
0) the clients are weighted equally; both cases say so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field

from services.aggregator.strategies.base import AggregationResult, Strategy, StrategyOptions
from services.aggregator.strategies.tensors import apply_delta, client_deltas
from shared.lora_state import LoraState
from shared.updates import ClientUpdate

SHARD = 2000


def repeated_median_line(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(slope, intercept) per row of y [coords, n] over x = 0..n−1 of the sorted values."""
    n = y.shape[1]
    ys = np.sort(y, axis=1)
    x = np.arange(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        slopes = (ys[:, :, None] - ys[:, None, :]) / (x[:, None] - x[None, :])
    off_diagonal = ~np.eye(n, dtype=bool)
    per_point = np.median(slopes[:, off_diagonal].reshape(len(y), n, n - 1), axis=2)
    slope = np.median(per_point, axis=1)
    return slope, np.median(ys, axis=1) - slope * (n - 1) / 2


def reweight(y: np.ndarray, lam: float, thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """(confidence contribution [coords, n], restricted values [coords, n]) for y [coords, n]."""
    n = y.shape[1]
    slope, intercept = repeated_median_line(y)
    ranks = np.argsort(np.argsort(y, axis=1, kind="stable"), axis=1, kind="stable").astype(np.float64)
    mean_rank = (n - 1) / 2
    leverage = 1 / n + (ranks - mean_rank) ** 2 / (n * (n * n - 1) / 12)  # H_ii of [1, rank]
    h = np.sqrt(1 - leverage)
    k = lam * np.sqrt(2.0 / n)
    line = intercept[:, None] + slope[:, None] * ranks
    residual = y - line
    m = np.median(np.sort(np.abs(residual), axis=1)[:, 1:], axis=1)
    tau = 1.4826 * (1 + 5 / (n - 1)) * m + 1e-7
    e = residual / tau[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = h / e * np.clip(e / h, -k, k)
    w[np.isnan(w)] = 1.0
    confidence = w * w.std(axis=1, ddof=1)[:, None]
    return confidence, np.where(w >= thresh, y, line)


class ResidualOptions(StrategyOptions):
    lam: float = Field(2.0, description="lambda: K = lambda * sqrt(2 / n) in the residual weights.")
    thresh: float = Field(0.05, description="A value weighted below this is replaced by the line's.")


class ResidualBase(Strategy):
    name = "residual"

    def __init__(self, lam: float = 2.0, thresh: float = 0.05) -> None:
        if lam <= 0:
            raise ValueError(f"lam must be > 0, got {lam}")
        self.lam, self.thresh = lam, thresh

    def _aggregate(
        self,
        global_state: LoraState,
        updates: Sequence[ClientUpdate],
        factors: Sequence[float] | None,
        round_index: int | None,
    ) -> AggregationResult:
        deltas, layout = client_deltas(global_state, updates)
        n, dim = deltas.shape
        if n < 3:
            weights, restricted = np.full(n, 1 / n), deltas
            reason = f"{n} clients: no residual line, plain mean"
        else:
            restricted = np.empty_like(deltas)
            confidence = np.zeros(n)
            for start in range(0, dim, SHARD):
                part, values = reweight(deltas[:, start : start + SHARD].T, self.lam, self.thresh)
                confidence += part.sum(axis=0)
                restricted[:, start : start + SHARD] = values.T
            reason = ""
            if confidence.max() <= 0:
                weights, reason = np.full(n, 1 / n), "every confidence is 0: equal weights"
            else:
                squared = (confidence / confidence.max()) ** 2
                weights = squared / squared.sum()
        return AggregationResult(
            apply_delta(global_state, layout, weights @ restricted),
            {u.client_id: float(w) for u, w in zip(updates, weights, strict=True)},
            reason=reason,
        )
