"""A probe artifact: an ONNX graph plus a versioned JSON manifest, and its strict loader.

The graph takes raw deltas [batch, dim] (float32) and returns probabilities [batch]; the L2 normalisation
(norms below 1e-12 count as 1) is inside the graph. NaN/Inf never reach it: callers reject such input
(the service answers 422). The manifest pins everything a caller needs to build the input and to know
whether the probe fits an adapter: base model and weights fingerprint, LoRA config, feature spec.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError

from probes.manifest import MANIFEST_SCHEMA_VERSION, ProbeManifest
from shared.config import LoraSettings
from shared.features import FeatureSpec

if TYPE_CHECKING:
    import onnxruntime as ort

MODEL_FILE, MANIFEST_FILE = "model.onnx", "manifest.json"
INPUT_NAME, OUTPUT_NAME = "features", "probability"
_OPSET = 17


class ProbeArtifactError(RuntimeError):
    """A probe artifact that is missing, corrupt or does not fit what it claims."""


def build_onnx(weight: np.ndarray, bias: float, normalize: bool) -> onnx.ModelProto:
    dim = int(weight.shape[-1])
    nodes, initializers = (
        [],
        [
            numpy_helper.from_array(weight.reshape(dim, 1).astype(np.float32), "weight"),
            numpy_helper.from_array(np.asarray([bias], np.float32), "bias"),
            numpy_helper.from_array(np.asarray([1e-12], np.float32), "norm_floor"),
            numpy_helper.from_array(np.asarray([1.0], np.float32), "one"),
            numpy_helper.from_array(np.asarray([1], np.int64), "squeeze_axis"),
        ],
    )
    x = INPUT_NAME
    if normalize:
        nodes += [
            helper.make_node("ReduceL2", [x], ["norm"], axes=[1], keepdims=1),
            helper.make_node("Less", ["norm", "norm_floor"], ["tiny_norm"]),
            helper.make_node("Where", ["tiny_norm", "one", "norm"], ["safe_norm"]),
            helper.make_node("Div", [x, "safe_norm"], ["normalised"]),
        ]
        x = "normalised"
    nodes += [
        helper.make_node("MatMul", [x, "weight"], ["logit_col"]),
        helper.make_node("Add", ["logit_col", "bias"], ["logit_biased"]),
        helper.make_node("Sigmoid", ["logit_biased"], ["prob_col"]),
        helper.make_node("Squeeze", ["prob_col", "squeeze_axis"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes,
        "lora_probe",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch"])],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", _OPSET)], producer_name="safe-fedllm"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_artifact(directory: Path, model: onnx.ModelProto, manifest_fields: dict) -> ProbeManifest:
    directory.mkdir(parents=True, exist_ok=True)
    blob = model.SerializeToString()
    manifest = ProbeManifest(
        **manifest_fields,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        onnx_sha256=_sha256(blob),
    )
    (directory / MODEL_FILE).write_bytes(blob)
    (directory / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def _centred_weight(weight: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """`center` folded into the weight: w . (x - mean(x)) = (w - mean(w)) . x, exactly, for any x."""
    w = np.asarray(weight, np.float32)
    return w - w.mean(dtype=np.float64).astype(np.float32) if spec.normalize == "center" else w


def export_linear_probe(
    directory: Path,
    probe_id: str,
    weight: np.ndarray,
    bias: float,
    spec: FeatureSpec,
    *,
    base_model: str,
    fingerprint: str,
    lora: LoraSettings | dict,
    threshold: float,
    training_data_hash: str,
    min_step: int = 1,
    training: dict | None = None,
    metrics: dict | None = None,
) -> ProbeManifest:
    """Write a logistic probe (weights over `spec`'s features) as an artifact in `directory`."""
    return write_artifact(
        directory,
        build_onnx(_centred_weight(weight, spec), bias, normalize=spec.normalize == "l2"),
        {
            "probe_id": probe_id,
            "base_model": {"name": base_model, "fingerprint": fingerprint},
            "lora": lora,
            "feature_spec": spec,
            "threshold": threshold,
            "min_step": min_step,
            "training_data_hash": training_data_hash,
            "training": training or {},
            "metrics": metrics or {},
        },
    )


@dataclass
class LoadedProbe:
    manifest: ProbeManifest
    onnx_bytes: bytes
    directory: Path

    @property
    def probe_id(self) -> str:
        return self.manifest.probe_id

    def session(self, intra_op_threads: int = 1) -> ort.InferenceSession:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(self.onnx_bytes, options, providers=["CPUExecutionProvider"])


def load_artifact(directory: Path) -> LoadedProbe:
    """Read and verify an artifact; anything missing, corrupt or inconsistent raises ProbeArtifactError."""
    manifest_path, model_path = directory / MANIFEST_FILE, directory / MODEL_FILE
    if not manifest_path.is_file() or not model_path.is_file():
        raise ProbeArtifactError(f"{directory}: a probe artifact needs {MODEL_FILE} and {MANIFEST_FILE}")
    try:
        manifest = ProbeManifest.model_validate(json.loads(manifest_path.read_text()))
    except (json.JSONDecodeError, ValidationError) as error:
        raise ProbeArtifactError(f"{manifest_path}: invalid manifest: {error}") from error
    if manifest.schema_version != MANIFEST_SCHEMA_VERSION:
        raise ProbeArtifactError(
            f"{manifest_path}: schema {manifest.schema_version}, expected {MANIFEST_SCHEMA_VERSION}"
        )
    blob = model_path.read_bytes()
    if _sha256(blob) != manifest.onnx_sha256:
        raise ProbeArtifactError(
            f"{model_path}: checksum mismatch with the manifest (corrupt or replaced file)"
        )
    try:
        model = onnx.load_from_string(blob)
        onnx.checker.check_model(model)
    except Exception as error:  # onnx raises several unrelated types for a bad graph
        raise ProbeArtifactError(f"{model_path}: not a valid ONNX model: {error}") from error
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if dims[-1].dim_value != manifest.feature_spec.dim:
        raise ProbeArtifactError(
            f"{model_path}: input width {dims[-1].dim_value} != feature spec dim {manifest.feature_spec.dim}"
        )
    return LoadedProbe(manifest, blob, directory)


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()
