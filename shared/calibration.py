"""Decision thresholds from benign scores for a stated false-positive rate (pure numpy).

Shared by the probe (its calibrated threshold) and the behavioural audit (its flagging threshold).
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

import numpy as np


def threshold_for_fpr(benign_scores: Sequence[float] | np.ndarray, fpr: float) -> float:
    """The lowest threshold t such that at most floor(fpr * n) benign scores are >= t (flag: score >= t).

    t lies just above the (k+1)-th largest benign score, k = floor(fpr * n): ties at that score are never
    flagged, so the realised false-positive rate on these scores is <= fpr, never above it.
    """
    scores = np.asarray(benign_scores, dtype=np.float64).reshape(-1)
    if scores.size == 0:
        raise ValueError("calibration needs at least one benign score")
    if not np.all(np.isfinite(scores)):
        raise ValueError("benign scores must be finite")
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"fpr must be in [0, 1), got {fpr}")
    allowed = int(np.floor(fpr * scores.size + 1e-9))  # 1e-9: 0.02 * 50 is 1, not 0.999...
    descending = np.sort(scores)[::-1]
    return float(np.nextafter(descending[allowed], np.inf))


def normal_tail_quantile(benign_scores: Sequence[float] | np.ndarray, fpr: float) -> float:
    """The (1 − fpr) quantile of a normal fitted to the scores (sample SD); −inf (no bound) for fewer than
    two scores or fpr 0, where no tail can be fitted."""
    scores = np.asarray(benign_scores, dtype=np.float64).reshape(-1)
    if scores.size < 2 or fpr == 0.0:
        return float("-inf")
    return float(scores.mean() + NormalDist().inv_cdf(1 - fpr) * scores.std(ddof=1))


def fitted_threshold_for_fpr(benign_scores: Sequence[float] | np.ndarray, fpr: float) -> float:
    """max(`normal_tail_quantile`, `threshold_for_fpr`'s empirical threshold).

    A few dozen benign scores cannot resolve a 2% tail empirically: with n scores and none allowed above it,
    the empirical threshold sits just above the largest, which a new benign score exceeds with probability
    1 / (n + 1) (6% for n = 15), not fpr. The fitted spread extrapolates the tail; the empirical rule is the
    floor, so the realised rate on the calibration scores stays <= fpr.
    """
    empirical = threshold_for_fpr(benign_scores, fpr)  # validates the scores and fpr first
    return max(normal_tail_quantile(benign_scores, fpr), empirical)


def false_positive_rate(benign_scores: Sequence[float] | np.ndarray, threshold: float) -> float:
    scores = np.asarray(benign_scores, dtype=np.float64).reshape(-1)
    return float(np.mean(scores >= threshold)) if scores.size else 0.0
