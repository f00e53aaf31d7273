"""The audit service as a Serve application builder, for a Serve config file or KubeRay's `serveConfigV2`:

    applications:
    - name: audit-service
      route_prefix: /audit
      import_path: services.audit_service.app_builder:build_app
      args: {num_cpus: 1, autoscaling: {min_replicas: 1, max_replicas: 2}, canaries: {size: 64}}

`args` are `AuditServiceSettings` fields; anything not given comes from SAFE_FEDLLM_AUDIT_* variables (nested
settings merge field by field) and then the defaults. A config file's `deployments:` entry overrides the
options built here, as Serve documents; the Helm chart renders both from the same values.

The shared base: Serve builds a config's application in a one-off task (`max_calls=1`) whose worker exits
after the build, and with it every object that worker put. The bases are therefore loaded and put by a
detached actor, `BaseHolder`, that owns them as long as the Ray cluster lives; the replicas map them
(`deployment._shared_bases`). Where that is not possible (no Ray here, e.g. a unit test or `serve build`,
or publishing failed), the builder publishes nothing and each replica loads its own base.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.serve import Application

from services.audit_service.deployment import build_application, publish_bases
from services.audit_service.settings import AuditServiceSettings

log = logging.getLogger(__name__)
HOLDER_NAMESPACE = "safe-fedllm"
# A sliver of CPU keeps the holder off a head that runs no work (num-cpus 0): the head has neither the memory
# to convert the base nor the object store room to hold it. It also keeps its worker pod from being scaled
# away, which would lose the published copy.
HOLDER_NUM_CPUS = 0.01
PUBLISH_TIMEOUT_S = 900.0  # a first start converts SmolLM2's GGUF (tens of seconds on a loaded pod)


def settings_from_args(args: dict[str, Any]) -> AuditServiceSettings:
    """Validated settings; an unknown key is refused (the settings class itself ignores unknown env vars)."""
    unknown = sorted(set(args) - set(AuditServiceSettings.model_fields))
    if unknown:
        known = ", ".join(sorted(AuditServiceSettings.model_fields))
        raise ValueError(f"unknown audit service args {unknown}; known: {known}")
    return AuditServiceSettings(**args)


class BaseHolder:
    """Owns the published bases of one application: loads each model once per Ray cluster, keeps its ref."""

    def __init__(self) -> None:
        self._refs: dict = {}

    def publish(self, models: tuple[str, ...]) -> dict:
        for name in models:
            if name not in self._refs:  # the model's weights are fixed by the image, hence by the cluster
                self._refs.update(publish_bases((name,)))
        return {name: self._refs[name] for name in models}


def shared_base_refs(settings: AuditServiceSettings) -> dict:
    """name -> ObjectRef of each base, owned by the app's BaseHolder; {} where Ray does not allow it."""
    import ray

    if not ray.is_initialized():
        return {}
    try:
        holder = (
            ray.remote(BaseHolder)
            .options(
                name=f"{settings.app_name}-base-holder",
                namespace=HOLDER_NAMESPACE,
                lifetime="detached",
                get_if_exists=True,
                num_cpus=HOLDER_NUM_CPUS,
            )
            .remote()
        )
        return dict(ray.get(holder.publish.remote(settings.models), timeout=PUBLISH_TIMEOUT_S))
    except Exception as error:  # the replicas load the base themselves: slower to start, same answers
        log.warning("could not publish the audit bases (%s); each replica loads its own", error)
        return {}


def build_app(args: dict[str, Any]) -> Application:
    """Serve's application-builder entry point: `args` from the config file's application entry."""
    settings = settings_from_args(args)
    return build_application(settings, shared_base_refs(settings))
