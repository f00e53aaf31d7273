"""The probe pipeline end to end on tiny-llama: build, train, export, load, score (real ONNX Runtime)."""

import numpy as np
import pytest

from probes.artifact import export_linear_probe, load_artifact
from probes.classifier import ProbeTrainingConfig
from probes.dataset import ClientSetting, ProbeDataset, ProbeDatasetConfig, build_probe_dataset
from probes.experiment import run_probe_experiment, split_masks
from shared.features import FeatureSpec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    config = ProbeDatasetConfig(
        model="tiny-llama",
        train_trajectories={"maliciousgen": 20, "helpful": 12, "alpaca": 8},
        test_trajectories={"maliciousgen": 4, "helpful": 2, "alpaca": 2, "dolly": 2},
        client_settings=(ClientSetting(name="lr_x2", lr_scale=2.0),),
        client_setting_trajectories=2,
        selfgen_harmful=0,
        steps=3,
        batch_size=2,
        lr=1e-3,
        all_layers=True,
    )
    path = tmp_path_factory.mktemp("probe") / "tiny"
    built = build_probe_dataset(config, progress=False, output=path)
    built.save(path)
    return ProbeDataset.load(path)


def test_dataset_layout_and_safe_format(dataset):
    trajectories = 20 + 12 + 8 + 4 + 2 + 2 + 2 + 2 * 2
    assert dataset.features.shape == (trajectories * 3, (64 + 32) * 8)
    assert dataset.all_layers is not None and dataset.all_layers.dtype == np.float16
    assert set(np.unique(dataset.source)) == {"maliciousgen", "helpful", "alpaca", "dolly"}
    assert (dataset.labels == (dataset.source == "maliciousgen")).all()
    assert sorted(np.unique(dataset.step)) == [1, 2, 3]
    assert (dataset.samples_seen == dataset.step * 2).all()
    assert set(np.unique(dataset.setting)) == {"builder", "lr_x2"}
    # B starts at zero, so the first-step feature is B_1 itself and non-zero
    assert np.abs(dataset.features[dataset.step == 1]).sum(axis=1).min() > 0
    assert dataset.spec == FeatureSpec.model_validate(dataset.spec.model_dump())


def test_test_sets_are_trajectory_disjoint_from_training(dataset):
    masks = split_masks(dataset)
    train_traj = set(dataset.trajectory[masks["train"]])
    for name in ("heldout", "unseen_benign_style", "client_settings"):
        assert masks[name].any()
        assert not train_traj & set(dataset.trajectory[masks[name]])
    assert set(dataset.source[masks["unseen_benign_style"]]) == {"dolly", "maliciousgen"}
    assert "dolly" not in set(dataset.source[masks["train"] | masks["heldout"]])


def test_train_export_load_and_score_with_parity(dataset, tmp_path):
    main, rows = run_probe_experiment(dataset, ProbeTrainingConfig(), "tiny-probe", fpr=0.02, min_step=2)
    heldout = next(
        r
        for r in rows
        if (r.get("policy"), r.get("normalize"), r["test_set"]) == ("first_B", "l2", "heldout")
    )
    # Chance is 0.5. Tiny-llama's 768 features separate less than SmolLM2's.
    assert heldout["auroc"] >= 0.75, heldout
    assert heldout["min_step"] == main.min_step == 2
    assert 0 < main.threshold < 1
    per_step = [r for r in rows if r["test_set"] == "per_step"]
    assert {(r["setting"], r["step"]) for r in per_step} >= {("builder", 1), ("builder", 3), ("lr_x2", 3)}
    assert {(r.get("policy"), r.get("normalize")) for r in rows if r["test_set"] != "per_step"} == {
        ("first_B", "l2"),
        ("first_B", "none"),
        ("all_layers", "l2"),
        ("module_norms", "center"),
        ("module_norms", "none"),
    }
    weight = main.model.linear.weight.detach().numpy().reshape(-1)
    bias = float(main.model.linear.bias.detach())
    export_linear_probe(
        tmp_path / "tiny-probe",
        "tiny-probe",
        weight,
        bias,
        main.spec,
        base_model="tiny-llama",
        fingerprint=dataset.meta["base_fingerprint"],
        lora=dataset.meta["config"]["lora"],
        threshold=main.threshold,
        min_step=main.min_step,
        training_data_hash=dataset.content_hash(),
    )
    probe = load_artifact(tmp_path / "tiny-probe")
    assert (probe.manifest.threshold, probe.manifest.min_step) == (main.threshold, 2)
    raw = dataset.features[:10]
    onnx_scores = probe.session().run(None, {"features": raw})[0]
    x = probe.manifest.feature_spec.transform(raw)
    torch_scores = 1 / (1 + np.exp(-(x.astype(np.float64) @ weight + bias)))
    np.testing.assert_allclose(onnx_scores, torch_scores, atol=1e-5)
