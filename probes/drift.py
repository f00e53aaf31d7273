"""The drift check: does the probe still work on deltas taken against a drifted global adapter?

The probe is trained on B_t − B_0 from the fixed init. Online, the step and client levels score
B_t − B^r, the delta against the round's global adapter, which drifts away from θ^0 as rounds go by;
the shadow level retrains from θ^0 to avoid exactly this. Here the global adapter is drifted by k rounds of
real FedAvg (clients trained on the client pool, some malicious), then the held-out probe-pool trajectories
are re-run from it with the same samples and seeds, and the probe scores both kinds of delta.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from peft import PeftModel
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from probes.dataset import (
    PlannedTrajectory,
    ProbeDataset,
    ProbeDatasetConfig,
    run_trajectory,
    trajectory_plan,
)
from probes.experiment import split_masks
from probes.metrics import detection_metrics
from probes.sources import load_probe_sources
from shared.config import runtime_settings
from shared.data.pools import build_pools
from shared.lora import attach_lora, get_lora_state
from shared.lora_averaging import stack_states, weighted_mean
from shared.lora_state import LoraState
from shared.model_zoo import load_base_model


class DriftCheckConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rounds: int = Field(3, ge=1, description="k: FedAvg rounds that drift the global adapter.")
    clients_per_round: int = Field(4, ge=1)
    malicious_per_round: int = Field(1, ge=0)
    lr: float = Field(5e-4, gt=0, description="Client lr of the drifting rounds (E1's FedAvg lr).")
    trajectories_per_class: int = Field(5, ge=1, description="Held-out trajectories re-run per class.")


def drift_global_adapter(
    dataset_config: ProbeDatasetConfig,
    drift: DriftCheckConfig,
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    init: LoraState,
) -> LoraState:
    """k rounds of FedAvg from θ^0 over client-pool data (never probe or evaluation data)."""
    pool = build_pools(runtime_settings().data_dir).client
    per_client = dataset_config.samples_per_trajectory
    global_state, cursor = init, {"harmful": 0, "helpful": 0}
    for round_index in range(drift.rounds):
        states = []
        for client in range(drift.clients_per_round):
            source = "harmful" if client < drift.malicious_per_round else "helpful"
            rows = (
                [(p.instruction, p.harmful) for p in pool.harmful]
                if source == "harmful"
                else [(x.instruction, x.response) for x in pool.helpful]
            )
            start = cursor[source] % len(rows)
            cursor[source] += per_client
            local = PlannedTrajectory(
                source,
                int(source == "harmful"),
                "drift",
                "drift",
                drift.lr,
                dataset_config.batch_size,
                dataset_config.steps,
                tuple((rows * 2)[start : start + per_client]),
            )
            seed = 10_000 + round_index * 97 + client
            states.append(
                run_trajectory(model, tokenizer, local, dataset_config.max_seq_len, global_state, seed)[-1]
            )
        global_state = weighted_mean(stack_states(states, init), [1.0] * len(states))
    return global_state


def run_drift_check(
    dataset: ProbeDataset,
    score: Callable[[np.ndarray], np.ndarray],  # raw features [n, dim] -> probabilities [n]
    threshold: float,
    min_step: int,
    drift: DriftCheckConfig,
    progress: bool = True,
) -> list[dict]:
    """Rows comparing the probe on fixed-init deltas and on drifted-global deltas of the same trajectories."""
    config = ProbeDatasetConfig.model_validate(dataset.meta["config"])
    loaded = load_base_model(config.model)
    if loaded.fingerprint != dataset.meta["base_fingerprint"]:
        raise ValueError("the base model changed since the probe dataset was built")
    model = attach_lora(loaded.model, config.lora)
    init = get_lora_state(model)
    data_dir = runtime_settings().data_dir
    pools = build_pools(data_dir)
    sources = load_probe_sources(
        config.model, data_dir, pools, config.selfgen_harmful, config.seed, config.selfgen_benign
    )
    plan = trajectory_plan(config, sources)
    held = split_masks(dataset, min_step)["heldout"]
    chosen = []
    for label in (1, 0):
        ids = sorted(set(dataset.trajectory[held & (dataset.labels == label)].tolist()))
        chosen += ids[: drift.trajectories_per_class]
    global_state = drift_global_adapter(config, drift, model, loaded.tokenizer, init)
    spec = dataset.spec
    fixed_mask = np.isin(dataset.trajectory, chosen) & (dataset.step >= min_step)
    drifted, labels = [], []
    for index in tqdm(chosen, desc="drifted trajectories", unit="traj", disable=not progress):
        trajectory = plan[index]
        seed = config.seed * 7919 + index
        states = run_trajectory(model, loaded.tokenizer, trajectory, config.max_seq_len, global_state, seed)
        drifted += [spec.raw(state, global_state) for state in states[min_step - 1 :]]
        labels += [trajectory.label] * len(states[min_step - 1 :])
    rows = []
    for reference, x, y in (
        ("fixed_init", dataset.features[fixed_mask], dataset.labels[fixed_mask]),
        (f"global_after_{drift.rounds}_rounds", np.stack(drifted), np.asarray(labels)),
    ):
        metrics = detection_metrics(y, score(x), threshold)
        rows.append({"test_set": "drift", "reference": reference, **metrics.model_dump()})
    drift_norm = float(np.linalg.norm(spec.raw(global_state, init)))
    for row in rows:
        row.update(drift=drift.model_dump(), global_first_b_drift_norm=drift_norm)
    return rows
