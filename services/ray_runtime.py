"""Connecting to Ray: the cluster at SAFE_FEDLLM_RAY_ADDRESS, or a local one started on demand."""

from __future__ import annotations

import ray

from shared.config import runtime_settings


def ensure_ray(num_cpus: int | None = None) -> None:
    if not ray.is_initialized():
        settings = runtime_settings()
        ray.init(
            address=settings.ray_address,
            num_cpus=num_cpus if settings.ray_address is None else None,
            log_to_driver=False,
            include_dashboard=False,
            configure_logging=False,
        )
