"""Where the ONNX call runs: in this process, or on the Serve probe deployment through a handle."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from services.probe_service.errors import ProbeServiceError, ScorerUnavailable
from services.probe_service.scoring import ProbeBank
from shared.probe_scorer import ProbeScorer

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle


class ScoringBackend(ProbeScorer, Protocol):
    async def ready(self) -> bool: ...


class InProcessBackend:
    """Scores in the calling process (the bare-ASGI baseline, unit tests, embedding in other servers)."""

    def __init__(self, bank: ProbeBank) -> None:
        self.bank = bank

    async def score(self, probe_id: str, features: np.ndarray) -> np.ndarray:
        return self.bank.score(probe_id, features)

    async def ready(self) -> bool:
        return bool(self.bank.manifests())


class ServeBackend:
    """Scores on the `ProbeScorer` deployment, whose replicas batch concurrent calls."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle

    async def score(self, probe_id: str, features: np.ndarray) -> np.ndarray:
        try:
            return await self.handle.score.remote(probe_id, features)
        except ProbeServiceError:
            raise
        except Exception as error:  # any failure of the remote replicas (Ray errors, timeouts): retryable
            raise ScorerUnavailable(f"probe replicas unavailable: {type(error).__name__}") from error

    async def ready(self) -> bool:
        return bool(await self.handle.loaded_probes.remote())
