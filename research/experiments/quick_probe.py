"""A small tiny-llama probe for the `--quick` variants (no probe ships for tiny-llama).

Built with the project's probe pipeline at reduced size (probes.dataset -> probes.experiment -> ONNX
export) into its own registry directory; the quick runs point the probe service there. Clients in the quick
runs train at the probe's batch and T, so shadow steps are in its distribution.
"""

from __future__ import annotations

import os
from pathlib import Path

QUICK_PROBE_ID = "tiny-llama-quick-b8t4"
QUICK_STEPS = 4
QUICK_BATCH = 8  # 16 samples by min_step 2: the E2 curve saturates there
QUICK_LR = 1e-3


def build_quick_probe(directory: Path, progress: bool = False) -> Path:
    """Build (once; an existing artifact is reused) and export the quick probe; returns the registry dir."""
    from probes.artifact import ProbeArtifactError, export_linear_probe, load_artifact
    from probes.classifier import ProbeTrainingConfig
    from probes.dataset import ProbeDatasetConfig, build_probe_dataset
    from probes.experiment import run_probe_experiment

    target = directory / QUICK_PROBE_ID
    try:
        load_artifact(target)
        return directory
    except ProbeArtifactError:
        pass
    config = ProbeDatasetConfig(
        model="tiny-llama",
        train_trajectories={"maliciousgen": 16, "helpful": 10, "alpaca": 6},
        test_trajectories={"maliciousgen": 4, "helpful": 2, "alpaca": 2, "dolly": 2},
        client_settings=(),
        client_setting_trajectories=0,
        selfgen_harmful=0,
        steps=QUICK_STEPS,
        batch_size=QUICK_BATCH,
        lr=QUICK_LR,
    )
    dataset = build_probe_dataset(config, progress=progress)
    main, rows = run_probe_experiment(dataset, ProbeTrainingConfig(), QUICK_PROBE_ID, fpr=0.05, min_step=2)
    export_linear_probe(
        target,
        QUICK_PROBE_ID,
        main.model.linear.weight.detach().float().numpy().reshape(-1),
        float(main.model.linear.bias.detach()),
        main.spec,
        base_model="tiny-llama",
        fingerprint=dataset.meta["base_fingerprint"],
        lora=dataset.meta["config"]["lora"],
        threshold=main.threshold,
        min_step=main.min_step,
        training_data_hash=dataset.content_hash(),
        training={"dataset": config.model_dump(mode="json")},
        metrics={
            r["test_set"]: r for r in rows if r.get("policy") == "first_B" and r.get("normalize") == "l2"
        },
    )
    return directory


def use_probe_registry(directory: Path) -> None:
    """Point this process's probe service settings at `directory` (read when the service starts)."""
    from shared.config import runtime_settings

    os.environ["SAFE_FEDLLM_PROBE_ARTIFACTS_DIR"] = str(directory.resolve())
    runtime_settings.cache_clear()
