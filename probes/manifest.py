"""A probe's manifest: what it was trained on and how to use it (no onnx: the service's clients read it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from shared.config import LoraSettings
from shared.features import FeatureSpec

MANIFEST_SCHEMA_VERSION = 1


class BaseModelRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    fingerprint: str


class ProbeManifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = MANIFEST_SCHEMA_VERSION
    probe_id: str
    base_model: BaseModelRef
    lora: LoraSettings
    feature_spec: FeatureSpec
    reference: str = "init"  # the delta's reference the probe was trained on: the fixed initial adapter
    normalization_in_graph: bool = True
    threshold: float
    # scores of local steps before this one are not evidence: they integrate too few samples (E2 curve)
    min_step: int = 1
    training_data_hash: str
    training: dict
    metrics: dict
    created_at: str
    onnx_sha256: str
