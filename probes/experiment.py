"""Train the probe and evaluate it on held-out trajectories, with the ablations and the style check.

Test sets (all trajectory-disjoint from training):
- `heldout`: held-out helpfulQA vs held-out MaliciousGen trajectories;
- `unseen_benign_style`: Alpaca and Dolly trajectories (a benign source and style the probe never saw) vs
  the same held-out MaliciousGen ones. The malicious and helpful sets share one generator's style, so this
  is what shows the probe detects harm rather than style.
Variants: first_B + L2 (the method), first_B without normalisation, all_layers + L2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probes.classifier import LogisticProbe, ProbeTrainingConfig, predict, split_by_trajectory, train_probe
from probes.dataset import MALICIOUS_SOURCE, STYLE_BENIGN_SOURCES, TRAIN_BENIGN_SOURCE, ProbeDataset
from probes.metrics import detection_metrics
from shared.features import FeatureSpec, Normalization, Policy, normalise

VARIANTS: tuple[tuple[Policy, Normalization], ...] = (
    ("first_B", "l2"),
    ("first_B", "none"),
    ("all_layers", "l2"),
)


@dataclass
class TrainedProbe:
    policy: Policy
    normalize: Normalization
    model: LogisticProbe
    spec: FeatureSpec
    log: dict


def split_masks(dataset: ProbeDataset, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    core = np.isin(dataset.source, [TRAIN_BENIGN_SOURCE, MALICIOUS_SOURCE])
    _, held = split_by_trajectory(dataset.trajectory[core], test_fraction, seed, dataset.labels[core])
    heldout = np.zeros(len(dataset.labels), dtype=bool)
    heldout[np.flatnonzero(core)[held]] = True
    style = np.isin(dataset.source, STYLE_BENIGN_SOURCES) | (heldout & (dataset.labels == 1))
    return {"train": core & ~heldout, "heldout": heldout, "unseen_benign_style": style}


def _features(
    dataset: ProbeDataset, policy: Policy, normalize: Normalization
) -> tuple[np.ndarray, FeatureSpec]:
    if policy == "first_B":
        raw, spec = dataset.features, dataset.spec
    else:
        if dataset.all_layers is None or dataset.all_layers_spec is None:
            raise ValueError("the dataset was built without all_layers features")
        raw, spec = dataset.all_layers.astype(np.float32), dataset.all_layers_spec
    return normalise(raw, normalize), spec.model_copy(update={"normalize": normalize})


def run_probe_experiment(
    dataset: ProbeDataset, config: ProbeTrainingConfig, probe_id: str, test_fraction: float = 0.25
) -> tuple[TrainedProbe, list[dict]]:
    """Returns the main probe (first_B + L2) and one result row per (variant, test set)."""
    masks = split_masks(dataset, test_fraction, config.seed)
    train = masks["train"]
    rows, main = [], None
    for policy, normalize in VARIANTS:
        if policy == "all_layers" and dataset.all_layers is None:
            continue
        x, spec = _features(dataset, policy, normalize)
        model, log = train_probe(x[train], dataset.labels[train], dataset.trajectory[train], config)
        for test_set in ("heldout", "unseen_benign_style"):
            mask = masks[test_set]
            metrics = detection_metrics(dataset.labels[mask], predict(model, x[mask]), config.threshold)
            rows.append(
                {
                    "probe_id": probe_id,
                    "policy": policy,
                    "normalize": normalize,
                    "test_set": test_set,
                    **metrics.model_dump(exclude={"n", "n_malicious"}),
                    "n_train": int(train.sum()),
                    "n_test": metrics.n,
                    "n_test_malicious": metrics.n_malicious,
                    "threshold": config.threshold,
                }
            )
        if (policy, normalize) == VARIANTS[0]:
            main = TrainedProbe(policy, normalize, model, spec, log)
    assert main is not None
    return main, rows
