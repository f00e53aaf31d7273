"""LASA, layer-adaptive sparsified aggregation (Xu et al., "Achieving Byzantine-Resilient Federated
Learning via Layer-Adaptive Sparsified Model Aggregation", WACV 2025), as the official code implements it.

1. Every update is clipped to the round's median update norm (the lower middle for an even count, as
   torch.median in the official code).
2. Each client's update is sparsified: over all its matrices together, only entries with |x| strictly
   above the ⌊(1 − sparsity)·d⌋-th largest |x| are kept (so ties at the cut are dropped, as in the code).
3. Per layer (each matrix, e.g. one lora_A), two robust z-score filters, z = |x − median(x)| / std(x)
   (population std): on the layer's update norms (z < λ_n) and on its sign score
   ½(1 + (Σ sign / #non-zero) · (1 − sparsity)) (z < λ_s). The layer's new value is the global plus the
   mean of the admitted clients' sparsified updates (all clients when none is admitted).
Tensors other than matrices (none in a LoRA adapter) keep the global value, as in the official code.

Options: `sparsity` (0.3), `lambda_n` (1.0), `lambda_s` (1.0): the official code's defaults.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field

from services.aggregator.strategies.base import AggregationResult, Strategy, StrategyOptions
from services.aggregator.strategies.norm_clipping import clip_to
from services.aggregator.strategies.tensors import apply_delta, client_deltas, coordinate_median
from shared.lora_state import LoraState
from shared.updates import ClientUpdate


def sparsify(update: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep the entries strictly above the magnitude of the ⌊(1 − sparsity)·d⌋-th largest."""
    if sparsity == 0.0:
        return update
    magnitude = np.abs(update)
    keep = int(len(update) * (1 - sparsity))
    if keep < 1:
        return np.zeros_like(update)
    cut = np.partition(magnitude, len(update) - keep)[len(update) - keep]
    return np.where(magnitude > cut, update, 0.0)


def zscore_admits(values: np.ndarray, threshold: float) -> np.ndarray:
    """|x − median| / std < threshold (lower median, population std); a constant vector admits all."""
    std = values.std()
    if std == 0:
        return np.ones(len(values), dtype=bool)
    return np.abs(values - coordinate_median(values, "lower")) / std < threshold


def sign_score(layer: np.ndarray, sparsity: float) -> float:
    signs = np.sign(layer)
    balance = signs.sum() / max(1, int(np.count_nonzero(signs)))
    return float(0.5 * (1 + balance * (1 - sparsity)))


class LasaOptions(StrategyOptions):
    sparsity: float = Field(0.3, description="Fraction of each update's entries zeroed (the smallest |x|).")
    lambda_n: float = Field(1.0, description="lambda_n: z-score bound of the layer-norm filter.")
    lambda_s: float = Field(1.0, description="lambda_s: z-score bound of the sign-score filter.")


class Lasa(Strategy):
    name = "lasa"

    def __init__(self, sparsity: float = 0.3, lambda_n: float = 1.0, lambda_s: float = 1.0) -> None:
        if not 0 <= sparsity < 1 or lambda_n <= 0 or lambda_s <= 0:
            raise ValueError("lasa needs 0 <= sparsity < 1 and lambda_n, lambda_s > 0")
        self.sparsity, self.lambda_n, self.lambda_s = sparsity, lambda_n, lambda_s

    def _aggregate(
        self,
        global_state: LoraState,
        updates: Sequence[ClientUpdate],
        factors: Sequence[float] | None,
        round_index: int | None,
    ) -> AggregationResult:
        deltas, layout = client_deltas(global_state, updates)
        n = len(updates)
        norms = np.linalg.norm(deltas, axis=1)
        clipped = clip_to(deltas, float(coordinate_median(norms, "lower")))
        slices, offset = [], 0
        for shape in layout.shapes:
            size = int(np.prod(shape))
            slices.append((slice(offset, offset + size), len(shape) in (2, 4)))
            offset += size
        matrices = np.concatenate([np.arange(s.start, s.stop) for s, is_matrix in slices if is_matrix])
        sparse = np.zeros_like(clipped)
        for i in range(n):
            sparse[i, matrices] = sparsify(clipped[i, matrices], self.sparsity)
        delta = np.zeros(deltas.shape[1])
        admitted = np.zeros(n)
        for part, is_matrix in slices:
            if not is_matrix:
                continue
            layer = sparse[:, part]
            scores = np.array([sign_score(row, self.sparsity) for row in layer])
            benign = zscore_admits(np.linalg.norm(layer, axis=1), self.lambda_n)
            benign &= zscore_admits(scores, self.lambda_s)
            chosen = np.flatnonzero(benign) if benign.any() else np.arange(n)
            delta[part] = layer[chosen].mean(axis=0)
            admitted[chosen] += 1
        share = admitted / admitted.sum()
        return AggregationResult(
            apply_delta(global_state, layout, delta),
            {u.client_id: float(w) for u, w in zip(updates, share, strict=True)},
            details={
                "layers_admitted": dict(zip([u.client_id for u in updates], admitted.tolist(), strict=True))
            },
        )
