"""The one shape of everything that scores probe features: in-process ONNX, a Serve handle, HTTP, or wrappers
that time them. The probe service's backends and the aggregator's scorers all satisfy it."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class ProbeScorer(Protocol):
    async def score(self, probe_id: str, features: np.ndarray) -> np.ndarray:
        """P(malicious) [n] for raw feature rows [n, dim] of the probe `probe_id`."""
        ...
