"""The probe service as a Serve application builder, for a Serve config file or KubeRay's `serveConfigV2`:

    applications:
    - import_path: services.probe_service.app_builder:build_app
      args: {scorer_num_cpus: 0.5, scorer_autoscaling: {min_replicas: 1, max_replicas: 8}}

`args` are `ProbeServiceSettings` fields; anything not given comes from SAFE_FEDLLM_PROBE_* variables (the
Helm chart's ConfigMap) and then the defaults. A config file's `deployments:` entries override the options
built here, as Serve documents; the chart renders both from the same values.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from services.probe_service.deployment import build_application
from services.probe_service.settings import ProbeServiceSettings


def settings_from_args(args: dict[str, Any]) -> ProbeServiceSettings:
    """Validated settings; an unknown key is refused (the settings class itself ignores unknown env vars)."""
    unknown = sorted(set(args) - set(ProbeServiceSettings.model_fields))
    if unknown:
        known = ", ".join(sorted(ProbeServiceSettings.model_fields))
        raise ValueError(f"unknown probe service args {unknown}; known: {known}")
    return ProbeServiceSettings(**args)


def build_app(args: dict[str, Any]) -> Application:
    """Serve's application-builder entry point: `args` from the config file's application entry."""
    return build_application(settings_from_args(args))
