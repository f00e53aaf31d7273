"""Settings of the audit service (SAFE_FEDLLM_AUDIT_* environment variables, or a Helm values file)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.probe_service.settings import AutoscalingSettings
from shared.audit.canaries import CanarySettings
from shared.config import LoraSettings


class AuditServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SAFE_FEDLLM_AUDIT_", env_nested_delimiter="__", extra="ignore"
    )

    models: tuple[str, ...] = Field(("smollm2-135m",), min_length=1, description="Base models held.")
    lora: LoraSettings = Field(
        LoraSettings(), description="The federation's adapter layout (r, alpha, targets)."
    )
    canaries: CanarySettings = CanarySettings()
    app_name: str = "audit-service"
    route_prefix: str = Field("/audit", description="Beside the probe service's '/' on one Serve proxy.")
    host: str = Field("127.0.0.1", description="HTTP bind address of Serve's proxy.")
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="Larger request bodies get 413 before they are read."
    )
    batch_max_size: int = Field(8, gt=0, description="@serve.batch: most audits run back to back.")
    batch_wait_timeout_s: float = Field(
        0.05, ge=0, description="@serve.batch: wait for a round's updates to arrive together."
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved per audit replica.")
    max_ongoing_requests: int = Field(32, gt=0)
    autoscaling: AutoscalingSettings = AutoscalingSettings(min_replicas=1, max_replicas=2)

    @property
    def torch_threads(self) -> int:
        """torch intra-op threads: the replica's whole CPUs, at least one."""
        return max(1, int(self.num_cpus))
