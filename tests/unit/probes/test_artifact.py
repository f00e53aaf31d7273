import json

import numpy as np
import pytest

from probes.artifact import ProbeArtifactError, build_onnx, load_artifact, write_artifact
from probes.registry import ProbeRegistry, UnknownProbeError
from shared.config import LoraSettings
from shared.features import FeatureSpec, normalise

DIM = 24
SPEC = FeatureSpec(keys=("layers.0.q_proj.lora_B.weight",), shapes=((8, 3),))


def _write(root, probe_id="p1", base="tiny-llama", weight=None):
    rng = np.random.default_rng(0)
    weight = rng.normal(size=DIM).astype(np.float32) if weight is None else weight
    fields = {
        "probe_id": probe_id,
        "base_model": {"name": base, "fingerprint": "abc"},
        "lora": LoraSettings(),
        "feature_spec": SPEC,
        "threshold": 0.8,
        "training_data_hash": "h",
        "training": {},
        "metrics": {},
    }
    write_artifact(root / probe_id, build_onnx(weight, 0.25, normalize=True), fields)
    return weight


def test_onnx_matches_the_numpy_reference(tmp_path):
    weight = _write(tmp_path)
    probe = load_artifact(tmp_path / "p1")
    x = np.random.default_rng(1).normal(size=(7, DIM)).astype(np.float32) * 50
    x[3] = 0.0  # zero delta: the norm floor applies
    onnx_scores = probe.session().run(None, {"features": x})[0]
    reference = 1 / (1 + np.exp(-(normalise(x, "l2").astype(np.float64) @ weight + 0.25)))
    assert onnx_scores.shape == (7,)
    np.testing.assert_allclose(onnx_scores, reference, atol=1e-5)


def test_corrupt_and_inconsistent_artifacts_are_refused(tmp_path):
    _write(tmp_path)
    model = tmp_path / "p1" / "model.onnx"
    model.write_bytes(model.read_bytes()[:-10])
    with pytest.raises(ProbeArtifactError, match="checksum"):
        load_artifact(tmp_path / "p1")
    _write(tmp_path, "p2")
    manifest = tmp_path / "p2" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["feature_spec"]["shapes"] = [[9, 3]]
    manifest.write_text(json.dumps(data))
    with pytest.raises(ProbeArtifactError, match="input width"):
        load_artifact(tmp_path / "p2")
    manifest.write_text("{not json")
    with pytest.raises(ProbeArtifactError, match="invalid manifest"):
        load_artifact(tmp_path / "p2")
    with pytest.raises(ProbeArtifactError, match="needs"):
        load_artifact(tmp_path / "missing")


def test_registry_lookup_by_id(tmp_path):
    # Lookup by base model and LoRA shape is ProbeBank.resolve's (tests/unit/services/probe_service).
    _write(tmp_path, "a", base="tiny-llama")
    _write(tmp_path, "b", base="smollm2-135m")
    registry = ProbeRegistry(tmp_path)
    assert registry.ids() == ["a", "b"]
    assert registry.get("b").manifest.base_model.name == "smollm2-135m"
    with pytest.raises(UnknownProbeError, match="known probes: a, b"):
        registry.get("zzz")
    with pytest.raises(UnknownProbeError, match="unknown probe"):
        registry.get("../a")


def test_center_is_folded_into_the_exported_weight_exactly(tmp_path):
    from probes.artifact import export_linear_probe

    spec = FeatureSpec(policy="module_norms", normalize="center", keys=("a", "b", "c"), shapes=((2, 2),) * 3)
    weight = np.asarray([0.5, -1.0, 2.0], np.float32)
    export_linear_probe(
        tmp_path / "c",
        "c",
        weight,
        0.25,
        spec,
        base_model="tiny-llama",
        fingerprint="abc",
        lora=LoraSettings().model_dump(),
        threshold=0.5,
        min_step=1,
        training_data_hash="h",
        training={},
        metrics={},
    )
    x = np.asarray([[-3.0, -5.0, -4.0], [1.0, 1.0, 1.0]], np.float32)
    scores = load_artifact(tmp_path / "c").session().run(None, {"features": x})[0]
    reference = 1 / (1 + np.exp(-(normalise(x, "center").astype(np.float64) @ weight + 0.25)))
    np.testing.assert_allclose(scores, reference, atol=1e-6)
    assert scores[1] == pytest.approx(1 / (1 + np.exp(-0.25)))  # a flat profile carries no evidence
