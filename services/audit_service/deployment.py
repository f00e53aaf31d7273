"""The Ray Serve application: one autoscaled deployment that holds the base models and audits in batches.

    HTTP -> Serve proxy -> AuditScorer (decode, validate) -> @serve.batch -> AuditBank.run

The driver loads each base once and publishes it to the object store (`shared.model_zoo.sharing`); every
replica on a node maps those read-only arrays instead of loading its own copy, and only its LoRA slot is
private. A replica that cannot reach the published copy (its owner gone) loads the base itself. In-Ray
callers (the aggregator) call `AuditScorer.audit` through a DeploymentHandle with arrays, skipping HTTP.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from services.audit_service.api import create_app
from services.audit_service.bank import AuditBank, AuditJob, AuditOutcome
from services.audit_service.settings import AuditServiceSettings
from services.probe_service.errors import ProbeServiceError
from shared.lora_state import LoraState

DEPLOYMENT_NAME = "AuditScorer"
log = logging.getLogger(__name__)
_PUBLISHED: dict[str, dict] = {}  # app name -> object refs of its bases, alive as long as this driver


def _shared_bases(refs: dict) -> dict:
    import ray

    from shared.config import runtime_settings
    from shared.model_zoo.sharing import materialize_frozen_base
    from shared.precision import resolve_device

    device = resolve_device(runtime_settings().device)  # a GPU replica holds its own copy there
    bases = {}
    for name, ref in refs.items():
        try:
            bases[name] = materialize_frozen_base(ray.get(ref, timeout=60)).to(device)
        except Exception as error:  # owner gone or object lost: this replica loads the base itself
            log.warning("shared base %s unavailable (%s); loading it", name, error)
    return bases


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress()
class AuditScorer:
    def __init__(self, settings: dict, base_refs: dict) -> None:
        import torch

        self.settings = AuditServiceSettings(**settings)
        torch.set_num_threads(self.settings.torch_threads)
        self.bank = AuditBank.build(self.settings, _shared_bases(base_refs))
        self._batched.set_max_batch_size(self.settings.batch_max_size)
        self._batched.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)

    async def audit(self, model: str, adapter: LoraState, reference: LoraState | None = None) -> AuditOutcome:
        """The in-Ray path; raises ModelNotHeld / InvalidUpdate for an adapter that does not fit."""
        outcome = await self._batched(AuditJob(model, adapter, reference))
        if isinstance(outcome, ProbeServiceError):
            raise outcome
        return outcome

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _batched(self, jobs: list[AuditJob]) -> list[AuditOutcome | ProbeServiceError]:
        # One round's updates share the global adapter: its harm preference is computed once per batch.
        return self.bank.run(jobs)

    def models(self) -> list[str]:
        return self.bank.models()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.bank, _ReplicaBackend(self), self.settings)


class _ReplicaBackend:
    """HTTP requests audit on the replica that decoded them, through its batch."""

    def __init__(self, replica: AuditScorer) -> None:
        self.replica = replica

    async def audit(self, job: AuditJob) -> AuditOutcome:
        return await self.replica.audit(job.model, job.adapter, job.reference)


def build_application(settings: AuditServiceSettings, base_refs: dict | None = None) -> Application:
    # The refs travel inside a dict: Serve passes them through as references, each replica maps them.
    from shared.config import runtime_settings
    from shared.precision import resolve_device

    options: dict[str, float] = {"num_cpus": settings.num_cpus}
    if resolve_device(runtime_settings().device).type == "cuda":  # SAFE_FEDLLM_DEVICE
        options["num_gpus"] = 1  # only then: a CPU deployment's options stay what the chart's config says
    return AuditScorer.options(
        autoscaling_config=settings.autoscaling.serve_config(),
        ray_actor_options=options,
        max_ongoing_requests=settings.max_ongoing_requests,
    ).bind(settings.model_dump(mode="json"), base_refs or {})


def publish_bases(models: tuple[str, ...]) -> dict:
    """Load each base once here and put it in the object store; returns name -> ObjectRef."""
    import ray

    from shared.model_zoo import load_base_model
    from shared.model_zoo.sharing import export_frozen_base

    refs = {}
    for name in models:
        loaded = load_base_model(name, device="cpu")  # only its host copy travels
        refs[name] = ray.put(export_frozen_base(loaded.model, loaded.fingerprint))
    return refs


def start_audit_service(settings: AuditServiceSettings | None = None) -> str:
    """Deploy on the current Ray (started locally if needed) and return the service's base URL."""
    from services.ray_runtime import ensure_ray

    settings = settings or AuditServiceSettings()
    ensure_ray()
    refs = publish_bases(settings.models)
    _PUBLISHED[settings.app_name] = refs
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_application(settings, refs), name=settings.app_name, route_prefix=settings.route_prefix)
    return service_url(settings)


def service_url(settings: AuditServiceSettings) -> str:
    prefix = settings.route_prefix.rstrip("/")
    return f"http://{settings.host}:{settings.port}{prefix}"


def audit_handle(settings: AuditServiceSettings | None = None) -> DeploymentHandle:
    """The in-Ray path: `.audit.remote(model, adapter, reference)` on this handle."""
    return serve.get_deployment_handle(
        DEPLOYMENT_NAME, app_name=(settings or AuditServiceSettings()).app_name
    )
