import numpy as np
import pytest

from probes.metrics import auroc, detection_metrics


def test_auroc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) + labels * 0.3, 1)  # with ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auroc(labels, scores) == pytest.approx(pairwise)


def test_auroc_extremes_and_single_class():
    assert auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auroc(np.array([0, 0, 1, 1]), np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert auroc(np.array([1, 1]), np.array([0.3, 0.4])) is None


def test_threshold_metrics():
    m = detection_metrics(np.array([1, 1, 0, 0]), np.array([0.9, 0.5, 0.85, 0.1]), threshold=0.8)
    assert (m.accuracy, m.precision, m.recall, m.n, m.n_malicious) == (0.5, 0.5, 0.5, 4, 2)
