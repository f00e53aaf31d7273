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
