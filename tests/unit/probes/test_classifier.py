import numpy as np

from probes.classifier import ProbeTrainingConfig, predict, split_by_trajectory, train_probe
from probes.metrics import detection_metrics
from shared.features import normalise


def _separable(n_traj: int = 40, steps: int = 5, dim: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)
    labels = np.repeat(np.arange(n_traj) % 2, steps)
    trajectory = np.repeat(np.arange(n_traj), steps)
    x = rng.normal(size=(n_traj * steps, dim)) + np.where(labels[:, None] == 1, 1.0, -1.0) * direction
    return normalise(x, "l2"), labels.astype(np.int8), trajectory


def test_split_is_by_trajectory_and_stratified():
    _, labels, trajectory = _separable()
    first, second = split_by_trajectory(trajectory, 0.25, seed=1, labels=labels)
    assert not set(trajectory[first]) & set(trajectory[second])
    assert len(set(trajectory[second])) == 10
    assert labels[second].mean() == 0.5


def test_probe_learns_a_separable_problem_and_is_seeded():
    x, labels, trajectory = _separable()
    train, test = split_by_trajectory(trajectory, 0.25, seed=3, labels=labels)
    config = ProbeTrainingConfig(seed=5)
    model, log = train_probe(x[train], labels[train], trajectory[train], config)
    metrics = detection_metrics(labels[test], predict(model, x[test]), threshold=0.5)
    assert metrics.accuracy > 0.9 and metrics.auroc > 0.95
    assert 1 <= log["epochs"] <= config.max_epochs
    again, _ = train_probe(x[train], labels[train], trajectory[train], config)
    np.testing.assert_allclose(predict(again, x[test]), predict(model, x[test]))
