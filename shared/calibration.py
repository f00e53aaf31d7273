"""Decision thresholds from benign scores for a stated false-positive rate (pure numpy).

Shared by the probe (its calibrated threshold) and the behavioural audit (its flagging threshold).
"""

from __future__ import annotations

from collections.abc import Sequence

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


def false_positive_rate(benign_scores: Sequence[float] | np.ndarray, threshold: float) -> float:
    scores = np.asarray(benign_scores, dtype=np.float64).reshape(-1)
    return float(np.mean(scores >= threshold)) if scores.size else 0.0
