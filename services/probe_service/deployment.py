"""The Ray Serve application: a FastAPI ingress in front of autoscaled ONNX probe replicas.

    HTTP -> Serve proxy -> ProbeIngress (decode, validate, build features) -> ProbeScorer (@serve.batch, ONNX)

In-Ray callers (the aggregator) skip HTTP and call `ProbeScorer.score` through a DeploymentHandle with
feature rows. Both deployments autoscale on ongoing requests; all knobs are `ProbeServiceSettings`.
"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
from fastapi import FastAPI
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from services.probe_service.api.app import create_app
from services.probe_service.backends import ServeBackend
from services.probe_service.scoring import ProbeBank
from services.probe_service.settings import ProbeServiceSettings

SCORER_NAME, INGRESS_NAME = "ProbeScorer", "ProbeIngress"


class BatchedScoring:
    """ONNX scoring with @serve.batch: concurrent calls share one ONNX run per probe."""

    bank: ProbeBank

    def _setup_scoring(self, config: ProbeServiceSettings) -> None:
        self.bank = ProbeBank(config.artifacts_dir, config.ort_threads)
        self._fused.set_max_batch_size(config.batch_max_size)
        self._fused.set_batch_wait_timeout_s(config.batch_wait_timeout_s)

    async def score(self, probe_id: str, features: np.ndarray) -> np.ndarray:
        """Probabilities for raw feature rows [n, dim]."""
        return await self._fused(probe_id, features)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def _fused(self, probe_ids: list[str], features: list[np.ndarray]) -> list[np.ndarray]:
        groups: dict[str, list[int]] = defaultdict(list)
        for index, probe_id in enumerate(probe_ids):
            groups[probe_id].append(index)
        out: list[np.ndarray] = [np.empty(0, np.float32)] * len(probe_ids)
        for probe_id, indices in groups.items():
            rows = [features[i] for i in indices]
            scores = self.bank.score(probe_id, np.concatenate(rows) if len(rows) > 1 else rows[0])
            offsets = np.cumsum([0] + [len(r) for r in rows])
            for i, start, end in zip(indices, offsets[:-1], offsets[1:], strict=True):
                out[i] = scores[start:end]
        return out

    def loaded_probes(self) -> list[str]:
        return [m.probe_id for m in self.bank.manifests()]


class ReplicaBackend:
    """Scores on the replica that received the HTTP request (no extra hop), still batched."""

    def __init__(self, replica: BatchedScoring) -> None:
        self.replica = replica

    async def score(self, probe_id: str, features: np.ndarray) -> np.ndarray:
        return await self.replica.score(probe_id, features)

    async def ready(self) -> bool:
        return bool(self.replica.loaded_probes())


@serve.deployment(name=SCORER_NAME)
class ProbeScorer(BatchedScoring):
    """The probe replicas in-Ray callers (the aggregator) reach through a DeploymentHandle."""

    def __init__(self, settings: dict) -> None:
        self._setup_scoring(ProbeServiceSettings(**settings))


@serve.deployment(name=INGRESS_NAME)
@serve.ingress()
class ProbeIngress(BatchedScoring):
    def __init__(self, scorer: DeploymentHandle, settings: dict) -> None:
        self.settings = ProbeServiceSettings(**settings)
        self.scorer = scorer
        self._setup_scoring(self.settings)

    def __serve_build_asgi_app__(self) -> FastAPI:
        backend = ReplicaBackend(self) if self.settings.score_in_ingress else ServeBackend(self.scorer)
        return create_app(self.bank, backend, self.settings)


def build_application(settings: ProbeServiceSettings) -> Application:
    raw = settings.model_dump(mode="json")
    scorer = ProbeScorer.options(
        autoscaling_config=settings.scorer_autoscaling.serve_config(),
        ray_actor_options={"num_cpus": settings.scorer_num_cpus},
        max_ongoing_requests=settings.max_ongoing_requests,
    ).bind(raw)
    return ProbeIngress.options(
        autoscaling_config=settings.ingress_autoscaling.serve_config(),
        ray_actor_options={"num_cpus": settings.ingress_num_cpus},
        max_ongoing_requests=settings.max_ongoing_requests,
    ).bind(scorer, raw)


def start_probe_service(settings: ProbeServiceSettings | None = None) -> str:
    """Deploy on the current Ray (started locally if needed) and return the service's base URL."""
    import ray

    from services.ray_runtime import ensure_ray

    settings = settings or ProbeServiceSettings()
    if not ray.is_initialized():  # Ray's processes read these at start; an existing Ray keeps its own
        os.environ.update(settings.ray_environment())
    ensure_ray()
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_application(settings), name=settings.app_name, route_prefix=settings.route_prefix)
    return service_url(settings)


def service_url(settings: ProbeServiceSettings) -> str:
    prefix = settings.route_prefix.rstrip("/")
    return f"http://{settings.host}:{settings.port}{prefix}"


def scorer_handle(settings: ProbeServiceSettings | None = None) -> DeploymentHandle:
    """The in-Ray path: call `.score.remote(probe_id, features)` on this handle."""
    return serve.get_deployment_handle(SCORER_NAME, app_name=(settings or ProbeServiceSettings()).app_name)


def replica_counts(settings: ProbeServiceSettings | None = None) -> dict[str, int]:
    """Running replicas per deployment of the service (for the elasticity benchmark and the CLI)."""
    app = serve.status().applications.get((settings or ProbeServiceSettings()).app_name)
    if app is None:
        return {}
    return {name: int(status.replica_states.get("RUNNING", 0)) for name, status in app.deployments.items()}
