"""The probe's training set: LoRA trajectories from the fixed init on probe-only data.

Each trajectory trains a fresh adapter (θ^0, the fixed init the FL clients start from) for T steps on one
source's samples at a fixed lr, as the shadow branch does, and records the feature of every step
(B_t − B_0 of layer 0; A_t, B_t − θ^0 of every layer for the `all_layers` ablation).

The plan splits by *sample* first, then by trajectory: each source's rows are shuffled once, the first
`test × samples_per_trajectory` rows feed the test trajectories (disjoint from each other), and training
trajectories draw their samples with overlap from the rest. A test trajectory therefore holds only samples
no training trajectory saw, and the probe gets many more training trajectories than a disjoint cut allows.
Roles:
- `train`: the probe's training (and validation) trajectories;
- `test`: held-out trajectories at the builder's settings, one set per source (Dolly only here: the unseen
  benign style);
- `client_settings`: test trajectories trained with settings the probe never saw (lr ×0.5 and ×2, another
  batch size), on test samples — real clients do not use the builder's settings.
Saved as .npz (loaded with allow_pickle=False) + JSON.
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

from probes.sources import ProbeSource, load_probe_sources
from shared.config import LoraSettings, runtime_settings
from shared.data.pools import build_pools
from shared.features import FeatureSpec
from shared.lora import attach_lora, get_lora_state, set_lora_state
from shared.lora_state import LoraState
from shared.model_zoo import load_base_model
from shared.prompting import tokenize_sft
from shared.training import LoraStepper, iterate_batches

ROLES = ("train", "test", "client_settings")


class ClientSetting(BaseModel):
    """Local-training settings of a client-settings test trajectory, relative to the builder's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    lr_scale: float = Field(1.0, gt=0)
    batch_size: int | None = Field(None, ge=1)
    steps: int | None = Field(None, ge=1)


DEFAULT_CLIENT_SETTINGS = (
    ClientSetting(name="lr_x0.5", lr_scale=0.5),
    ClientSetting(name="lr_x2", lr_scale=2.0),
    ClientSetting(name="batch4_T10", batch_size=4, steps=10),
)


class ProbeDatasetConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "smollm2-135m"
    train_trajectories: dict[str, int] = Field(
        default_factory=lambda: {"maliciousgen": 22, "selfgen_harmful": 16, "helpful": 20, "alpaca": 18},
        description="Training trajectories per source (samples drawn with overlap from its train rows).",
    )
    test_trajectories: dict[str, int] = Field(
        default_factory=lambda: {
            "maliciousgen": 4,
            "selfgen_harmful": 4,
            "helpful": 4,
            "alpaca": 3,
            "dolly": 3,
        },
        description="Held-out trajectories per source, on rows no training trajectory sees.",
    )
    client_settings: tuple[ClientSetting, ...] = DEFAULT_CLIENT_SETTINGS
    client_setting_trajectories: int = Field(
        2, ge=0, description="Per class and client setting (malicious and benign test sources alternate)."
    )
    selfgen_harmful: int = Field(
        400, ge=0, description="Harmful instructions the unaligned model answers for `selfgen_harmful`."
    )
    selfgen_benign: int = Field(
        0, ge=0, description="Probe-pool Alpaca instructions the unaligned model answers (`selfgen_benign`)."
    )
    steps: int = Field(5, ge=1, description="T: snapshots per trajectory.")
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-4, gt=0, description="Fixed lr, as the shadow branch trains.")
    max_seq_len: int = Field(128, ge=16)
    all_layers: bool = Field(False, description="Also record A and B of every layer (the ablation; float16).")
    lora: LoraSettings = LoraSettings()
    seed: int = 2023

    @property
    def samples_per_trajectory(self) -> int:
        return self.batch_size * self.steps


@dataclass(frozen=True)
class PlannedTrajectory:
    source: str
    label: int
    role: str
    setting: str  # "builder" or a ClientSetting name
    lr: float
    batch_size: int
    steps: int
    samples: tuple[tuple[str, str], ...]


@dataclass
class ProbeDataset:
    features: np.ndarray  # [N, D] float32, first_B raw deltas
    all_layers: np.ndarray | None  # [N, D_all] float16, or None
    labels: np.ndarray  # [N] int8, 1 = malicious
    trajectory: np.ndarray  # [N] int32
    step: np.ndarray  # [N] int16, 1..T
    samples_seen: np.ndarray  # [N] int32: batch_size x step, the samples this delta integrates
    source: np.ndarray  # [N] str
    role: np.ndarray  # [N] str: train | test | client_settings
    setting: np.ndarray  # [N] str: builder | a client setting's name
    spec: FeatureSpec
    all_layers_spec: FeatureSpec | None
    meta: dict

    _STRINGS = ("source", "role", "setting")

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "features": self.features,
            "labels": self.labels,
            "trajectory": self.trajectory,
            "step": self.step,
            "samples_seen": self.samples_seen,
            **{name: getattr(self, name).astype("U24") for name in self._STRINGS},
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
            samples_seen=arrays["samples_seen"],
            source=arrays["source"],
            role=arrays["role"],
            setting=arrays["setting"],
            spec=FeatureSpec.model_validate(meta.pop("spec")),
            all_layers_spec=FeatureSpec.model_validate(all_spec) if all_spec else None,
            meta=meta,
        )

    def content_hash(self) -> str:
        digest = hashlib.sha256(np.ascontiguousarray(self.features).tobytes())
        digest.update(self.labels.tobytes())
        digest.update(self.trajectory.tobytes())
        return digest.hexdigest()[:16]


def trajectory_plan(config: ProbeDatasetConfig, sources: dict[str, ProbeSource]) -> list[PlannedTrajectory]:
    """Every trajectory of the build, interleaved so that an interrupted build stays balanced."""
    rng = np.random.default_rng(config.seed)
    per = config.samples_per_trajectory
    unknown = (set(config.train_trajectories) | set(config.test_trajectories)) - set(sources)
    if unknown:
        raise ValueError(f"unknown probe sources {sorted(unknown)}; known: {sorted(sources)}")
    plan: list[PlannedTrajectory] = []
    test_rows: dict[str, list[tuple[str, str]]] = {}

    def planned(source: ProbeSource, role: str, samples, setting: str = "builder", **kw) -> PlannedTrajectory:
        settings = {"lr": config.lr, "batch_size": config.batch_size, "steps": config.steps, **kw}
        return PlannedTrajectory(source.name, source.label, role, setting, samples=tuple(samples), **settings)

    for name, source in sources.items():
        n_test, n_train = config.test_trajectories.get(name, 0), config.train_trajectories.get(name, 0)
        order = rng.permutation(len(source.rows))
        held, rest = order[: n_test * per], order[n_test * per :]
        if len(held) < n_test * per or (n_train and len(rest) < per):
            raise ValueError(
                f"{name}: {len(source.rows)} rows cannot hold {n_test} disjoint test trajectories of {per} "
                f"samples and leave {per} for training"
            )
        test_rows[name] = [source.rows[i] for i in held]
        for j in range(n_test):
            plan.append(planned(source, "test", test_rows[name][j * per : (j + 1) * per]))
        for _ in range(n_train):
            plan.append(
                planned(source, "train", [source.rows[i] for i in rng.choice(rest, per, replace=False)])
            )
    for setting in config.client_settings:
        batch, steps = setting.batch_size or config.batch_size, setting.steps or config.steps
        for label in (1, 0):
            names = [
                n for n in sources if sources[n].label == label and len(test_rows.get(n, ())) >= batch * steps
            ]
            if not names:
                continue
            for k in range(config.client_setting_trajectories):
                name = names[k % len(names)]
                picks = rng.choice(len(test_rows[name]), batch * steps, replace=False)
                plan.append(
                    planned(
                        sources[name],
                        "client_settings",
                        [test_rows[name][i] for i in picks],
                        setting.name,
                        lr=config.lr * setting.lr_scale,
                        batch_size=batch,
                        steps=steps,
                    )
                )
    return [plan[i] for i in rng.permutation(len(plan))]


def run_trajectory(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    trajectory: PlannedTrajectory,
    max_seq_len: int,
    start: LoraState,
    seed: int,
) -> list[LoraState]:
    """Train the trajectory's steps at its fixed lr from `start`; the adapter state after every step."""
    set_lora_state(model, start)
    torch.manual_seed(seed)
    examples = [tokenize_sft(tokenizer, q, a, max_seq_len) for q, a in trajectory.samples]
    stepper = LoraStepper(model)
    states = []
    for batch in iterate_batches(examples, trajectory.batch_size, trajectory.steps, tokenizer.pad_token_id):
        stepper.step(batch, trajectory.lr)
        states.append(get_lora_state(model))
    return states


def _partial_path(output: Path | None) -> Path | None:
    return None if output is None else output.with_name(output.name + ".partial.npz")


def build_probe_dataset(
    config: ProbeDatasetConfig, progress: bool = True, output: Path | None = None
) -> ProbeDataset:
    """Run the plan; with `output`, finished trajectories are checkpointed so a killed build resumes."""
    data_dir = runtime_settings().data_dir
    pools = build_pools(data_dir)
    sources = load_probe_sources(
        config.model, data_dir, pools, config.selfgen_harmful, config.seed, config.selfgen_benign
    )
    plan = trajectory_plan(config, sources)
    loaded = load_base_model(config.model)
    model = attach_lora(loaded.model, config.lora)
    init = get_lora_state(model)
    spec = FeatureSpec.for_adapter(init, "first_B")
    all_spec = FeatureSpec.for_adapter(init, "all_layers", "l2") if config.all_layers else None
    partial = _partial_path(output)
    done = _load_checkpoint(partial, config, loaded.fingerprint) if partial is not None else {}
    bar = tqdm(
        total=len(plan), initial=len(done), desc="probe trajectories", unit="traj", disable=not progress
    )
    for index, trajectory in enumerate(plan):
        if index in done:
            continue
        states = run_trajectory(
            model, loaded.tokenizer, trajectory, config.max_seq_len, init, config.seed * 7919 + index
        )
        done[index] = {"first_B": np.stack([spec.raw(s, init) for s in states]).astype(np.float32)}
        if all_spec is not None:
            done[index]["all"] = np.stack([all_spec.raw(s, init) for s in states]).astype(np.float16)
        if partial is not None:
            _checkpoint(partial, config, loaded.fingerprint, done)
        bar.update(1)
    bar.close()
    columns: dict[str, list] = {
        k: [] for k in ("labels", "trajectory", "step", "samples", "source", "role", "setting")
    }
    for index, trajectory in enumerate(plan):
        for t in range(1, trajectory.steps + 1):
            columns["labels"].append(trajectory.label)
            columns["trajectory"].append(index)
            columns["step"].append(t)
            columns["samples"].append(t * trajectory.batch_size)
            columns["source"].append(trajectory.source)
            columns["role"].append(trajectory.role)
            columns["setting"].append(trajectory.setting)
    dataset = ProbeDataset(
        features=np.concatenate([done[i]["first_B"] for i in range(len(plan))]),
        all_layers=np.concatenate([done[i]["all"] for i in range(len(plan))]) if all_spec else None,
        labels=np.asarray(columns["labels"], np.int8),
        trajectory=np.asarray(columns["trajectory"], np.int32),
        step=np.asarray(columns["step"], np.int16),
        samples_seen=np.asarray(columns["samples"], np.int32),
        source=np.asarray(columns["source"]),
        role=np.asarray(columns["role"]),
        setting=np.asarray(columns["setting"]),
        spec=spec,
        all_layers_spec=all_spec,
        meta={
            "model": loaded.name,  # a checkpoint directory goes by its name (manifests, adapters)
            "base_fingerprint": loaded.fingerprint,
            "config": config.model_dump(mode="json"),
            "num_trajectories": len(plan),
            "source_rows": {name: len(s.rows) for name, s in sources.items()},
        },
    )
    return dataset


def _load_checkpoint(
    path: Path, config: ProbeDatasetConfig, fingerprint: str
) -> dict[int, dict[str, np.ndarray]]:
    """The finished trajectories of a killed build of the same plan on the same base weights, else none:
    the config names the model, not its alignment, and a new alignment adapter keeps the name."""
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as saved:
        if str(saved["config"]) != config.model_dump_json() or (
            "fingerprint" not in saved or str(saved["fingerprint"]) != fingerprint
        ):
            return {}
        return {
            int(i): {"first_B": saved[f"f{i}"], **({"all": saved[f"a{i}"]} if f"a{i}" in saved else {})}
            for i in saved["indices"]
        }


def _checkpoint(
    path: Path, config: ProbeDatasetConfig, fingerprint: str, done: dict[int, dict[str, np.ndarray]]
) -> None:
    arrays: dict[str, np.ndarray] = {
        "config": np.asarray(config.model_dump_json()),
        "fingerprint": np.asarray(fingerprint),
        "indices": np.asarray(sorted(done)),
    }
    for i, parts in done.items():
        arrays[f"f{i}"] = parts["first_B"]
        if "all" in parts:
            arrays[f"a{i}"] = parts["all"]
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stub reads ** as its allow_pickle
    tmp.replace(path)
