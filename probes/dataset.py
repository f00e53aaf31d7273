"""The probe's training set: LoRA trajectories from the fixed init on the probe pool only.

Each trajectory trains a fresh adapter (θ^0, the same fixed init the FL clients start from) for T steps on
one class's samples, at a fixed lr as the shadow branch does, and records the feature of every step:
B_t − B_0 for `first_B` and A_t, B_t − θ^0 for the `all_layers` ablation. Benign trajectories come from
helpfulQA (train and test) and, for the style check only, from Alpaca and Dolly, which the probe never
trains on; malicious ones from MaliciousGen. Saved as .npz (loaded with allow_pickle=False) + JSON.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from shared.config import LoraSettings, runtime_settings
from shared.data.pools import Pool, build_pools
from shared.features import FeatureSpec
from shared.lora import attach_lora, get_lora_state, set_lora_state
from shared.lora_state import LoraState
from shared.model_zoo import load_base_model
from shared.prompting import tokenize_sft
from shared.training import LoraStepper, iterate_batches

MALICIOUS_SOURCE = "harmful"
TRAIN_BENIGN_SOURCE = "helpful"
STYLE_BENIGN_SOURCES = ("alpaca", "dolly")


class ProbeDatasetConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "smollm2-135m"
    trajectories_per_class: int = Field(
        20,
        ge=2,
        description="helpfulQA and MaliciousGen trajectories each (SmolLM2: 20 x 20 of 406 helpful).",
    )
    style_trajectories_per_source: int = Field(
        6, ge=0, description="Alpaca and Dolly test-only trajectories each."
    )
    steps: int = Field(5, ge=1, description="T: snapshots per trajectory.")
    batch_size: int = Field(4, ge=1)
    samples_per_trajectory: int | None = Field(
        None, ge=1, description="Distinct samples per trajectory, cycled (None: batch_size x steps)."
    )
    lr: float = Field(2e-4, gt=0, description="Fixed lr, as the shadow branch trains.")
    max_seq_len: int = Field(128, ge=16)
    all_layers: bool = Field(True, description="Also record A and B of every layer (the ablation; float16).")
    lora: LoraSettings = LoraSettings()
    seed: int = 2023


@dataclass
class ProbeDataset:
    features: np.ndarray  # [N, D] float32, first_B raw deltas
    all_layers: np.ndarray | None  # [N, D_all] float16, or None
    labels: np.ndarray  # [N] int8, 1 = malicious
    trajectory: np.ndarray  # [N] int32
    step: np.ndarray  # [N] int16, 1..T
    source: np.ndarray  # [N] str: harmful | helpful | alpaca | dolly
    spec: FeatureSpec
    all_layers_spec: FeatureSpec | None
    meta: dict

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "features": self.features,
            "labels": self.labels,
            "trajectory": self.trajectory,
            "step": self.step,
            "source": self.source.astype("U16"),
        }
        if self.all_layers is not None:
            arrays["all_layers"] = self.all_layers
        np.savez(path.with_suffix(".npz"), **arrays)
        meta = {**self.meta, "spec": self.spec.model_dump(mode="json")}
        if self.all_layers_spec is not None:
            meta["all_layers_spec"] = self.all_layers_spec.model_dump(mode="json")
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ProbeDataset:
        meta = json.loads(path.with_suffix(".json").read_text())
        with np.load(path.with_suffix(".npz"), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        all_spec = meta.pop("all_layers_spec", None)
        return cls(
            features=arrays["features"],
            all_layers=arrays.get("all_layers"),
            labels=arrays["labels"],
            trajectory=arrays["trajectory"],
            step=arrays["step"],
            source=arrays["source"],
            spec=FeatureSpec.model_validate(meta.pop("spec")),
            all_layers_spec=FeatureSpec.model_validate(all_spec) if all_spec else None,
            meta=meta,
        )

    def content_hash(self) -> str:
        digest = hashlib.sha256(np.ascontiguousarray(self.features).tobytes())
        digest.update(self.labels.tobytes())
        digest.update(self.trajectory.tobytes())
        return digest.hexdigest()[:16]


def source_rows(pool: Pool, source: str) -> list[tuple[str, str]]:
    if source == MALICIOUS_SOURCE:
        return [(p.instruction, p.harmful) for p in pool.harmful]
    return [(x.instruction, x.response) for x in getattr(pool, source)]


def trajectory_plan(config: ProbeDatasetConfig, pool: Pool) -> list[tuple[str, list[tuple[str, str]]]]:
    """(source, samples) per trajectory: disjoint sample sets drawn from the probe pool."""
    if pool.name != "probe":
        raise ValueError(f"probe trajectories must come from the probe pool, not {pool.name!r}")
    rng = np.random.default_rng(config.seed)
    per_trajectory = config.samples_per_trajectory or config.batch_size * config.steps
    counts = {
        MALICIOUS_SOURCE: config.trajectories_per_class,
        TRAIN_BENIGN_SOURCE: config.trajectories_per_class,
        **{s: config.style_trajectories_per_source for s in STYLE_BENIGN_SOURCES},
    }
    plan: list[tuple[str, list[tuple[str, str]]]] = []
    for source, count in counts.items():
        rows = source_rows(pool, source)
        order = rng.permutation(len(rows))
        if count * per_trajectory > len(rows):
            raise ValueError(
                f"{source}: {count} trajectories x {per_trajectory} samples exceed {len(rows)} rows"
            )
        plan += [
            (source, [rows[i] for i in order[j * per_trajectory : (j + 1) * per_trajectory]])
            for j in range(count)
        ]
    order = rng.permutation(len(plan))  # interleave classes so an interrupted build stays balanced
    return [plan[i] for i in order]


def run_trajectory(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    samples: list[tuple[str, str]],
    config: ProbeDatasetConfig,
    start: LoraState,
    seed_index: int,
) -> list[LoraState]:
    """Train `config.steps` steps at the fixed lr from `start`; the adapter state after every step."""
    set_lora_state(model, start)
    torch.manual_seed(config.seed * 7919 + seed_index)
    examples = [tokenize_sft(tokenizer, q, a, config.max_seq_len) for q, a in samples]
    stepper = LoraStepper(model)
    states = []
    for batch in iterate_batches(examples, config.batch_size, config.steps, tokenizer.pad_token_id):
        stepper.step(batch, config.lr)
        states.append(get_lora_state(model))
    return states


def build_probe_dataset(config: ProbeDatasetConfig, progress: bool = True) -> ProbeDataset:
    loaded = load_base_model(config.model)
    tokenizer = loaded.tokenizer
    pool = build_pools(runtime_settings().data_dir).probe
    plan = trajectory_plan(config, pool)
    model = attach_lora(loaded.model, config.lora)
    init = get_lora_state(model)
    spec = FeatureSpec.for_adapter(init, "first_B")
    all_spec = FeatureSpec.for_adapter(init, "all_layers", "l2") if config.all_layers else None
    features, all_layers, labels, trajectory, steps, sources = [], [], [], [], [], []
    for index, (source, samples) in enumerate(
        tqdm(plan, desc="probe trajectories", unit="traj", disable=not progress)
    ):
        states = run_trajectory(model, tokenizer, samples, config, start=init, seed_index=index)
        for t, state in enumerate(states, 1):
            features.append(spec.raw(state, init))
            if all_spec is not None:
                all_layers.append(all_spec.raw(state, init).astype(np.float16))
            labels.append(int(source == MALICIOUS_SOURCE))
            trajectory.append(index)
            steps.append(t)
            sources.append(source)
    return ProbeDataset(
        features=np.stack(features).astype(np.float32),
        all_layers=np.stack(all_layers) if all_layers else None,
        labels=np.asarray(labels, np.int8),
        trajectory=np.asarray(trajectory, np.int32),
        step=np.asarray(steps, np.int16),
        source=np.asarray(sources),
        spec=spec,
        all_layers_spec=all_spec,
        meta={
            "model": config.model,
            "base_fingerprint": loaded.fingerprint,
            "config": config.model_dump(mode="json"),
            "num_trajectories": len(plan),
        },
    )
