"""Pilot: more training trajectories for the SmolLM2 probe by resampling samples with overlap.

The shipped probe's data are 20 disjoint trajectories per class (the helpful probe pool has 406 samples).
Here each class's samples are split first: 5 test trajectories use samples no training trajectory sees; 50
training trajectories per class draw 20 samples each, with overlap, from the rest. Same model, init, T = 5,
batch 4, lr 2e-4 as `probe build`; the method's classifier. ~35 min on 2 cores.

    python scripts/experiments/probe_overlap_pilot.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from probes.classifier import ProbeTrainingConfig, predict, train_probe
from probes.dataset import ProbeDatasetConfig, run_trajectory, source_rows
from probes.metrics import auroc, detection_metrics
from shared.config import runtime_settings
from shared.data.pools import build_pools
from shared.features import FeatureSpec, normalise
from shared.lora import attach_lora, get_lora_state
from shared.model_zoo import load_base_model

TRAIN_PER_CLASS, TEST_PER_CLASS, SAMPLES, SEED = 50, 5, 20, 7


def main() -> None:
    torch.set_num_threads(2)
    config = ProbeDatasetConfig()
    loaded = load_base_model(config.model)
    model = attach_lora(loaded.model, config.lora)
    init = get_lora_state(model)
    spec = FeatureSpec.for_adapter(init, "first_B")
    pool = build_pools(runtime_settings().data_dir).probe
    rng = np.random.default_rng(SEED)
    plan = []
    for label, source in ((1, "harmful"), (0, "helpful")):
        rows = source_rows(pool, source)
        order = rng.permutation(len(rows))
        test_rows, train_rows = order[: TEST_PER_CLASS * SAMPLES], order[TEST_PER_CLASS * SAMPLES :]
        for j in range(TEST_PER_CLASS):
            plan.append((label, False, [rows[i] for i in test_rows[j * SAMPLES : (j + 1) * SAMPLES]]))
        for _ in range(TRAIN_PER_CLASS):
            plan.append((label, True, [rows[i] for i in rng.choice(train_rows, SAMPLES, replace=False)]))
    features, labels, trajectory, train = [], [], [], []
    for index in rng.permutation(len(plan)):
        label, is_train, samples = plan[index]
        for state in run_trajectory(model, loaded.tokenizer, samples, config, init, 1000 + int(index)):
            features.append(spec.raw(state, init))
            labels.append(label)
            trajectory.append(int(index))
            train.append(is_train)
    x, y = normalise(np.stack(features), "l2"), np.asarray(labels)
    t, tr = np.asarray(trajectory), np.asarray(train)
    probe, _ = train_probe(x[tr], y[tr], t[tr], ProbeTrainingConfig())
    scores = predict(probe, x[~tr])
    metrics = detection_metrics(y[~tr], scores, 0.8).model_dump()
    centroid = x[tr & (y == 1)].mean(0) - x[tr & (y == 0)].mean(0)
    result = {
        "command": "python scripts/experiments/probe_overlap_pilot.py",
        "train_trajectories_per_class": TRAIN_PER_CLASS,
        "test_trajectories_per_class": TEST_PER_CLASS,
        "heldout": metrics,
        "centroid_auroc": auroc(y[~tr], x[~tr] @ centroid),
        "mean_p_malicious": float(scores[y[~tr] == 1].mean()),
        "mean_p_benign": float(scores[y[~tr] == 0].mean()),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
