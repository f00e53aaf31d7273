"""Detection metrics: accuracy, AUROC, precision and recall at the threshold (pure numpy)."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel


class DetectionMetrics(BaseModel):
    accuracy: float
    auroc: float | None  # None when the test set holds one class only
    precision: float
    recall: float
    n: int
    n_malicious: int


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Mann-Whitney U form, ties counted half."""
    labels = np.asarray(labels).astype(bool)
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order), dtype=np.float64)
    combined = np.concatenate([pos, neg])[order]
    ranks_sorted = np.arange(1, len(order) + 1, dtype=np.float64)
    # average ranks over ties
    _, first, counts = np.unique(combined, return_index=True, return_counts=True)
    for start, count in zip(first, counts, strict=True):
        if count > 1:
            ranks_sorted[start : start + count] = ranks_sorted[start : start + count].mean()
    ranks[order] = ranks_sorted
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def detection_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> DetectionMetrics:
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(probabilities) >= threshold
    true_positive = int(np.sum(predicted & labels))
    return DetectionMetrics(
        accuracy=float(np.mean(predicted == labels)),
        auroc=auroc(labels, np.asarray(probabilities, dtype=np.float64)),
        precision=true_positive / max(1, int(predicted.sum())),
        recall=true_positive / max(1, int(labels.sum())),
        n=len(labels),
        n_malicious=int(labels.sum()),
    )
