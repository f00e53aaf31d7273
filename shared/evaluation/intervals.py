"""95% intervals for the evaluation metrics (pure numpy): Wilson for rates, normal for paired means."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial rate; stays inside [0, 1] and is sane at 0 or n successes."""
    if n <= 0:
        raise ValueError("a rate needs at least one trial")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: Sequence[float] | np.ndarray, z: float = Z95) -> tuple[float, float]:
    """mean ± z · standard error (sample std, ddof 1); a single value gives a zero-width interval."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("a mean needs at least one value")
    half = z * float(x.std(ddof=1)) / math.sqrt(x.size) if x.size > 1 else 0.0
    return float(x.mean() - half), float(x.mean() + half)
