"""Request and response bodies of the probe service's REST API (also its OpenAPI documentation)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Verdict = Literal["malicious", "benign"]
# The tensor name of already-extracted deltas in a safetensors body (POST /v1/score/update).
SNAPSHOTS_TENSOR = "snapshots"


class SnapshotRequest(BaseModel):
    """Already-extracted layer-0 lora_B deltas, one row per update or local step."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"probe_id": "smollm2-135m-qv-r8", "snapshots": [[0.0012, -0.0004, "..."]]}]
        }
    )

    probe_id: str | None = Field(None, description="Probe to use; default: chosen by base_model.")
    base_model: str | None = Field(None, description="Base model of the adapter, e.g. smollm2-135m.")
    snapshots: list[list[float]] = Field(
        description="[n, dim] deltas, row-major concatenation of the sorted layer-0 lora_B matrices."
    )


class ScoreResult(BaseModel):
    probability: float = Field(description="P(malicious) from the probe.")
    verdict: Verdict


class _Scored(BaseModel):
    probe_id: str
    threshold: float = Field(description="tau: probability >= threshold is 'malicious'.")
    feature_spec_version: str


class ScoreResponse(_Scored, ScoreResult):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "probe_id": "smollm2-135m-qv-r8",
                    "threshold": 0.8,
                    "feature_spec_version": "1",
                    "probability": 0.97,
                    "verdict": "malicious",
                }
            ]
        }
    )


class BatchScoreResponse(_Scored):
    results: list[ScoreResult]
    flagged: int = Field(description="How many results are 'malicious'.")


class ProbeInfo(BaseModel):
    probe_id: str
    base_model: str
    base_fingerprint: str
    lora_r: int
    lora_alpha: int
    target_modules: list[str]
    policy: str
    normalize: str
    dim: int
    threshold: float
    feature_spec_version: str
    created_at: str


class ErrorResponse(BaseModel):
    error: str = Field(description="Stable code: invalid_update, probe_not_found, payload_too_large, ...")
    detail: str
