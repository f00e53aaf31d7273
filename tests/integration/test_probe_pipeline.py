"""The probe pipeline end to end on tiny-llama: build, train, export, load, score (real ONNX Runtime)."""

import numpy as np
import pytest

from probes.artifact import export_linear_probe, load_artifact
from probes.classifier import ProbeTrainingConfig
from probes.dataset import ProbeDataset, ProbeDatasetConfig, build_probe_dataset
from probes.experiment import run_probe_experiment, split_masks
from shared.features import FeatureSpec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    config = ProbeDatasetConfig(
        model="tiny-llama",
        trajectories_per_class=20,
        style_trajectories_per_source=2,
        steps=3,
        batch_size=2,
        lr=1e-3,
    )
    built = build_probe_dataset(config, progress=False)
    path = tmp_path_factory.mktemp("probe") / "tiny"
    built.save(path)
    return ProbeDataset.load(path)


def test_dataset_layout_and_safe_format(dataset):
    assert dataset.features.shape == ((20 + 20 + 2 + 2) * 3, (64 + 32) * 8)
    assert dataset.all_layers is not None and dataset.all_layers.dtype == np.float16
    assert set(np.unique(dataset.source)) == {"harmful", "helpful", "alpaca", "dolly"}
    assert (dataset.labels == (dataset.source == "harmful")).all()
    assert sorted(np.unique(dataset.step)) == [1, 2, 3]
    # B starts at zero, so the first-step feature is B_1 itself and non-zero
    assert np.abs(dataset.features[dataset.step == 1]).sum(axis=1).min() > 0
    assert dataset.spec == FeatureSpec.model_validate(dataset.spec.model_dump())


def test_test_sets_are_trajectory_disjoint_from_training(dataset):
    masks = split_masks(dataset, 0.25, seed=1)
    train_traj = set(dataset.trajectory[masks["train"]])
    for name in ("heldout", "unseen_benign_style"):
        assert not train_traj & set(dataset.trajectory[masks[name]])
    style_sources = set(dataset.source[masks["unseen_benign_style"]])
    assert style_sources == {"alpaca", "dolly", "harmful"}


def test_train_export_load_and_score_with_parity(dataset, tmp_path):
    main, rows = run_probe_experiment(dataset, ProbeTrainingConfig(), "tiny-probe")
    heldout = next(
        r for r in rows if (r["policy"], r["normalize"], r["test_set"]) == ("first_B", "l2", "heldout")
    )
    # Measured 0.91 on this seed; chance is 0.5. Tiny-llama's 768 features separate less than SmolLM2's.
    assert heldout["auroc"] >= 0.75, heldout
    assert {(r["policy"], r["normalize"]) for r in rows} == {
        ("first_B", "l2"),
        ("first_B", "none"),
        ("all_layers", "l2"),
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
        threshold=0.8,
        training_data_hash=dataset.content_hash(),
    )
    probe = load_artifact(tmp_path / "tiny-probe")
    raw = dataset.features[:10]
    onnx_scores = probe.session().run(None, {"features": raw})[0]
    x = probe.manifest.feature_spec.transform(raw)
    torch_scores = 1 / (1 + np.exp(-(x.astype(np.float64) @ weight + bias)))
    np.testing.assert_allclose(onnx_scores, torch_scores, atol=1e-5)
