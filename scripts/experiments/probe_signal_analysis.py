"""Where the SmolLM2 probe's signal is: per-step separability of the probe dataset, and classifier settings.

Reads the dataset written by `safe-fedllm probe build --model smollm2-135m ...` and prints, on the same
trajectory split as `probe train`: nearest-centroid AUROC per step, mean cosine within/between classes at
steps 1 and 5, and the method's classifier under other batch / weight-decay / epoch settings.

    python scripts/experiments/probe_signal_analysis.py [runs/probe_data/smollm2-135m]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from probes.classifier import ProbeTrainingConfig, predict, train_probe
from probes.dataset import ProbeDataset
from probes.experiment import split_masks
from probes.metrics import auroc, detection_metrics
from shared.features import normalise

VARIANTS = (
    {},
    {"batch_size": 16},
    {"batch_size": 16, "weight_decay": 0.01},
    {"batch_size": 16, "max_epochs": 300, "patience": 50},
    {"batch_size": 16, "weight_decay": 0.0, "max_epochs": 300, "patience": 50},
)


def mean_cosine(a: np.ndarray, b: np.ndarray, same: bool) -> float:
    cos = a @ b.T
    return float(cos[np.triu_indices(len(a), 1)].mean() if same else cos.mean())


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/probe_data/smollm2-135m")
    ds = ProbeDataset.load(path)
    masks = split_masks(ds, 0.25, 2023)
    x, train, held = normalise(ds.features, "l2"), masks["train"], masks["heldout"]
    centroid = x[train & (ds.labels == 1)].mean(0) - x[train & (ds.labels == 0)].mean(0)
    for step in sorted(set(ds.step.tolist())):
        at = held & (ds.step == step)
        print(f"step {step}: centroid AUROC {auroc(ds.labels[at], x[at] @ centroid):.3f}")
    for step in (1, int(ds.step.max())):
        mal = x[(ds.step == step) & (ds.labels == 1)]
        ben = x[(ds.step == step) & (ds.source == "helpful")]
        print(
            f"step {step}: cosine malicious-malicious {mean_cosine(mal, mal, True):.3f}, "
            f"benign-benign {mean_cosine(ben, ben, True):.3f}, "
            f"malicious-benign {mean_cosine(mal, ben, False):.3f}"
        )
    for options in VARIANTS:
        model, _ = train_probe(
            x[train], ds.labels[train], ds.trajectory[train], ProbeTrainingConfig(**options)
        )
        p = predict(model, x[held])
        m = detection_metrics(ds.labels[held], p, 0.8)
        print(f"classifier {options or 'method defaults'}: AUROC {m.auroc:.3f}, recall at 0.8 {m.recall:.2f}")


if __name__ == "__main__":
    main()
