"""The probe experiment's rules: which steps count (min_step), the calibration split, the threshold."""

from statistics import NormalDist

import numpy as np
import pytest

from probes.classifier import LogisticProbe, predict
from probes.dataset import ProbeDataset
from probes.experiment import calibrate, calibration_rows, min_step_for, split_masks
from shared.features import FeatureSpec


def _dataset(rows: list[tuple[str, str, int, int]], steps: int = 5, batch: int = 8) -> ProbeDataset:
    """rows: (source, role, label, trajectory) per trajectory, each `steps` long."""
    cols: dict[str, list] = {k: [] for k in ("source", "role", "label", "traj", "step")}
    for source, role, label, traj in rows:
        for t in range(1, steps + 1):
            for key, value in zip(cols, (source, role, label, traj, t), strict=True):
                cols[key].append(value)
    n = len(cols["step"])
    step = np.asarray(cols["step"], np.int16)
    return ProbeDataset(
        features=np.zeros((n, 2), np.float32),
        all_layers=None,
        labels=np.asarray(cols["label"], np.int8),
        trajectory=np.asarray(cols["traj"], np.int32),
        step=step,
        samples_seen=(step * batch).astype(np.int32),
        source=np.asarray(cols["source"]),
        role=np.asarray(cols["role"]),
        setting=np.asarray(["builder"] * n),
        spec=FeatureSpec(policy="first_B", keys=("k",), shapes=((2, 1),)),
        all_layers_spec=None,
        meta={},
    )


def test_min_step_is_the_first_step_with_enough_samples():
    data = _dataset([("helpful", "train", 0, 0)], steps=5, batch=8)
    assert [min_step_for(data, s) for s in (1, 8, 9, 16, 17, 40, 400)] == [1, 1, 2, 2, 3, 5, 5]


def test_calibration_takes_half_of_each_training_sources_test_trajectories_never_dolly():
    rows = [("maliciousgen", "test", 1, i) for i in range(4)] + [
        ("helpful", "test", 0, 10 + i) for i in range(3)
    ]
    rows += [("dolly", "test", 0, 20 + i) for i in range(2)] + [("helpful", "train", 0, 30)]
    data = _dataset(rows)
    chosen = set(data.trajectory[calibration_rows(data, seed=1)].tolist())
    assert len(chosen & {0, 1, 2, 3}) == 2 and len(chosen & {10, 11, 12}) == 1
    assert not chosen & {20, 21, 30}
    masks = split_masks(data, min_step=3, seed=1)
    assert not set(data.trajectory[masks["heldout"]].tolist()) & chosen
    assert set(data.step[masks["heldout"]].tolist()) == {3, 4, 5}


def test_threshold_is_the_logit_normal_quantile_with_the_empirical_floor():
    probe = LogisticProbe(1)
    probe.linear.weight.data[:] = 1.0
    probe.linear.bias.data[:] = 0.0
    logits = np.asarray([[-2.0], [-1.0], [-1.5], [-0.5]], np.float32)  # scores = sigmoid(logit)
    labels, calib = np.zeros(4, np.int8), np.ones(4, dtype=bool)
    z = NormalDist().inv_cdf(0.98)
    expected = 1 / (1 + np.exp(-(logits.mean() + z * logits.std(ddof=1))))
    assert calibrate(logits, probe, labels, calib, 0.02) == pytest.approx(expected, rel=1e-5)
    # a single benign step: no spread to fit, the empirical rule (just above it) decides
    one = calibrate(logits[:1], probe, labels[:1], calib[:1], 0.02)
    score = float(predict(probe, logits[:1])[0])
    assert one > score and one == pytest.approx(score, rel=1e-9)


def test_unseen_writer_rows_train_and_calibrate_without_the_writer():
    from probes.classifier import ProbeTrainingConfig
    from probes.experiment import _unseen_writer_rows

    rows = []
    for writer, (harmful, benign) in {
        "mistral": ("maliciousgen", "helpful"),
        "smollm2": ("selfgen_harmful", "selfgen_benign"),
    }.items():
        base = 0 if writer == "mistral" else 100
        rows += [(harmful, "train", 1, base + i) for i in range(3)] + [
            (benign, "train", 0, base + 10 + i) for i in range(3)
        ]
        rows += [(harmful, "test", 1, base + 20 + i) for i in range(2)] + [
            (benign, "test", 0, base + 30 + i) for i in range(2)
        ]
    rows += [("alpaca", "train", 0, 200), ("dolly", "test", 0, 300)]
    data = _dataset(rows)
    rng = np.random.default_rng(0)
    style = np.isin(data.source, ["selfgen_harmful", "selfgen_benign"]).astype(np.float32)
    x = np.stack([data.labels + 0.1 * rng.normal(size=len(data.labels)), style], axis=1).astype(np.float32)
    masks = split_masks(data, min_step=2, seed=1)
    out = _unseen_writer_rows(data, x, ("first_B", "none"), masks, ProbeTrainingConfig(), "p", 0.05, 2)
    by = {r["test_set"]: r for r in out}
    assert set(by) == {"unseen_writer:mistral", "unseen_writer:smollm2"}  # alpaca wrote only benign rows
    # 6 training trajectories of the other writer + alpaca's, steps 2..5
    assert by["unseen_writer:smollm2"]["n_train"] == 7 * 4
    assert by["unseen_writer:smollm2"]["trained_writers"] == ["alpaca", "mistral"]
    assert by["unseen_writer:smollm2"]["n_test"] == 4 * 4  # all its test trajectories, calibration ones too
    assert by["unseen_writer:smollm2"]["auroc"] == 1.0  # harm, not style, separates
    assert by["unseen_writer:smollm2"]["unseen_benign_writer_fpr"] is not None
