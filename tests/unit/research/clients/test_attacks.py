"""The adaptive attackers' pure parts: update scaling, layer selection, the probe read from its ONNX file."""

import numpy as np
import pytest
import torch

from probes.artifact import export_linear_probe, load_artifact
from research.clients.attacks import (
    AttackConfig,
    first_layer_modules,
    probe_logistic,
    scale_snapshots,
    scale_update,
    torch_probe_score,
)
from shared.config import LoraSettings
from shared.features import FeatureSpec


def test_scaled_update_is_exactly_factor_times_the_delta():
    reference = {"a": np.array([1.0, -2.0, 0.5], np.float32), "b": np.zeros((2, 2), np.float32)}
    state = {"a": np.array([1.5, -1.0, 0.25], np.float32), "b": np.array([[0.25, 0], [0, -4]], np.float32)}
    scaled = scale_update(state, reference, 4.0)
    np.testing.assert_array_equal(scaled["a"], [3.0, 2.0, -0.5])  # 1 + 4 * 0.5, -2 + 4 * 1, 0.5 + 4 * -0.25
    np.testing.assert_array_equal(scaled["b"], [[1.0, 0.0], [0.0, -16.0]])
    assert scaled["a"].dtype == np.float32


def test_scaled_snapshots_move_from_the_reference_and_empty_stays_empty():
    reference = np.array([1.0, 2.0], np.float32)
    snapshots = np.array([[1.0, 2.0], [2.0, 1.0]], np.float32)
    np.testing.assert_array_equal(scale_snapshots(snapshots, reference, 3.0), [[1.0, 2.0], [4.0, -1.0]])
    empty = np.zeros((0, 0), np.float32)
    assert scale_snapshots(empty, reference, 3.0) is empty


def test_first_layer_modules_are_layer_zeros_a_and_b_only():
    names = [
        "base_model.model.model.layers.1.self_attn.q_proj.lora_A.default.weight",
        "base_model.model.model.layers.0.self_attn.v_proj.lora_B.default.weight",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
        "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight",
        "base_model.model.model.layers.10.self_attn.q_proj.lora_B.default.weight",
    ]
    assert first_layer_modules(names) == [names[1], names[2]]
    with pytest.raises(ValueError, match="no per-layer LoRA"):
        first_layer_modules(["model.embed_tokens.weight"])


def test_probe_penalty_needs_the_published_probe_and_labels_say_the_setting():
    with pytest.raises(ValueError, match="probe_dir"):
        AttackConfig(kind="probe_penalty")
    assert AttackConfig(kind="mixing", benign_share=0.25).label() == "mixing (benign 0.25)"
    assert AttackConfig(kind="scaling", scale=3).label() == "scaling (x3)"
    assert AttackConfig(kind="freeze_probe_layer").label() == "freeze_probe_layer"
    with pytest.raises(ValueError):
        AttackConfig(kind="mixing", benign_share=1.0)  # all benign is no attack


def test_torch_score_of_the_published_probe_matches_onnx_runtime(tmp_path):
    """The attacker's differentiable score is the ONNX graph's, read from the artifact alone."""
    rng = np.random.default_rng(3)
    spec = FeatureSpec(keys=("l.0.q.lora_B.weight", "l.0.v.lora_B.weight"), shapes=((6, 2), (4, 2)))
    weight, bias = rng.standard_normal(spec.dim).astype(np.float32), -0.7
    export_linear_probe(
        tmp_path / "p",
        "p",
        weight,
        bias,
        spec,
        base_model="tiny-llama",
        fingerprint="f" * 16,
        lora=LoraSettings(),
        threshold=0.5,
        training_data_hash="0" * 16,
    )
    probe = load_artifact(tmp_path / "p")
    read = probe_logistic(probe)
    read_weight, read_bias, normalize = read.weight, read.bias, read.normalize
    np.testing.assert_array_equal(read_weight, weight)
    assert read_bias == pytest.approx(bias) and normalize
    scales = np.array([[1e-3], [1], [10], [0], [1]], np.float32)
    features = (rng.standard_normal((5, spec.dim)) * scales).astype(np.float32)
    onnx_scores = probe.session().run(None, {"features": features})[0]
    torch_scores = [
        float(torch_probe_score(torch.tensor(x), torch.tensor(read_weight), read_bias, normalize))
        for x in features
    ]
    np.testing.assert_allclose(torch_scores, onnx_scores, atol=1e-6)
    assert torch_scores[3] == pytest.approx(1 / (1 + np.exp(0.7)))  # a zero delta scores sigmoid(bias)
