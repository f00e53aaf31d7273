"""Adaptive attackers: malicious clients that know the defense (E6, E7). Each is selected by name.

Data:
- `mixing`: the harmful shard diluted with benign rows (`benign_share` of the shard; population.py);
- `unseen_writer`: the harmful answers come from a writer no probe trained on (`harmful_rows`, a JSONL file).
Training (in both branches: under trusted execution the attacker still chooses what it trains and freezes):
- `freeze_probe_layer` / `freeze_layer`: every LoRA module trains except layer 0's (the one the method's
  probe reads) / layer `layer`'s;
- `split_training`: the harmful rows train every layer but 0, then the attacker's benign cover rows train
  layer 0 alone (what a layer-0 detector reads is benign-trained);
- `probe_penalty`: adds `penalty_weight` * p(malicious) of each *published* probe (`probe_dirs`: their ONNX
  weights and manifests ship with the project) to the loss, on the features that probe reads;
- `surrogate_penalty`: black box: the attacker trains its own probe (logistic regression on whole-update
  deltas of its own benign and harmful runs from the round's global) and penalises that.
What it reports (forged evidence; a remote client can send any tensors):
- `forged_snapshots`: the harmful adapter with the step and shadow snapshots of a benign cover run;
- `stale_last_snapshot`: honest snapshots but the last row is the round's global (no movement);
- `splice`: the harmful adapter with the cover run's values spliced into the tensors the method's probe
  reads (layer-0 B) and the cover run's snapshots, so every reported row agrees with the adapter;
- `scaling`: boosts the update: local = global + `scale` * (local - global), snapshots alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from peft import PeftModel
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.lora import lora_parameters
from shared.lora_state import LoraState, layer_index
from shared.training import response_loss

AttackKind = Literal[
    "none",
    "mixing",
    "freeze_probe_layer",
    "freeze_layer",
    "scaling",
    "probe_penalty",
    "surrogate_penalty",
    "forged_snapshots",
    "stale_last_snapshot",
    "splice",
    "split_training",
    "unseen_writer",
]
ATTACKS: tuple[str, ...] = AttackKind.__args__  # type: ignore[attr-defined]
# Attacks whose client also holds benign "cover" rows (to forge, splice or split with).
COVERED_ATTACKS = frozenset({"forged_snapshots", "splice", "split_training", "surrogate_penalty"})


class AttackConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: AttackKind = "none"
    benign_share: float = Field(0.5, ge=0, lt=1, description="mixing: benign rows' share of the shard.")
    scale: float = Field(3.0, gt=0, description="scaling: factor on the update's delta.")
    penalty_weight: float = Field(1.0, ge=0, description="probe_penalty, surrogate_penalty: lambda.")
    probe_dirs: tuple[str, ...] = Field((), description="probe_penalty: the published probes' artifact dirs.")
    layer: int = Field(15, ge=0, description="freeze_layer: the layer whose LoRA stays at the global.")
    surrogate_runs: int = Field(2, ge=1, description="surrogate_penalty: benign and harmful runs per class.")
    harmful_rows: str | None = Field(None, description="unseen_writer: JSONL of {instruction, response}.")

    @model_validator(mode="after")
    def _needs(self) -> AttackConfig:
        if self.kind == "probe_penalty" and not self.probe_dirs:
            raise ValueError("probe_penalty needs probe_dirs: the published probes the attacker evades")
        if self.kind == "unseen_writer" and not self.harmful_rows:
            raise ValueError("unseen_writer needs harmful_rows: the unseen writer's answers (JSONL)")
        return self

    @property
    def covered(self) -> bool:
        return self.kind in COVERED_ATTACKS

    def label(self) -> str:
        detail = {
            "mixing": f"benign {self.benign_share:g}",
            "scaling": f"x{self.scale:g}",
            "probe_penalty": f"lambda {self.penalty_weight:g}",
            "surrogate_penalty": f"lambda {self.penalty_weight:g}",
            "freeze_layer": f"layer {self.layer}",
        }.get(self.kind)
        return f"{self.kind} ({detail})" if detail else self.kind


@dataclass(frozen=True)
class LogisticProbe:
    """A linear probe as the attacker sees it: p = sigmoid(w . f(delta) + b) over `keys` (PEFT keys)."""

    weight: np.ndarray
    bias: float
    normalize: bool  # l2-normalise the delta first
    keys: tuple[str, ...]


def probe_logistic(probe: Any) -> LogisticProbe:
    """The logistic probe of a published artifact (probes.artifact.LoadedProbe): weights from its ONNX
    graph, the keys and normalisation from its manifest's feature spec (first_B or all_layers)."""
    import onnx
    from onnx import numpy_helper

    spec = probe.manifest.feature_spec
    if spec.policy == "module_norms" or spec.normalize not in ("l2", "none"):
        raise ValueError(f"the penalty reads raw deltas, not {spec.policy}/{spec.normalize} features")
    graph = onnx.load_from_string(probe.onnx_bytes).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return LogisticProbe(
        np.asarray(init["weight"], np.float32).reshape(-1),
        float(np.asarray(init["bias"]).reshape(-1)[0]),
        spec.normalize == "l2",
        tuple(spec.keys),
    )


def load_probe_logistic(probe_dir: str) -> LogisticProbe:
    from probes.artifact import load_artifact

    return probe_logistic(load_artifact(Path(probe_dir)))


def torch_probe_score(
    features: torch.Tensor, weight: torch.Tensor, bias: float, normalize: bool
) -> torch.Tensor:
    """The probe's p(malicious) for a raw delta [dim], differentiable (the ONNX graph in torch)."""
    x = features
    if normalize:
        norm = torch.linalg.vector_norm(x)
        x = x / torch.where(norm < 1e-12, torch.ones_like(norm), norm)
    return torch.sigmoid(x @ weight + bias)


def first_layer_modules(names: Sequence[str]) -> list[str]:
    """Names of the LoRA parameters (A and B) of the lowest-index layer that carries LoRA."""
    lora = [n for n in names if "lora_" in n and layer_index(n) is not None]
    if not lora:
        raise ValueError("the model has no per-layer LoRA parameters")
    first = min(layer_index(n) for n in lora)  # type: ignore[type-var]
    return [n for n in lora if layer_index(n) == first]


def set_trainable(model: torch.nn.Module, trains: Callable[[int], bool]) -> list[str]:
    """LoRA parameters of the layers `trains(layer)` accepts train, the others are frozen (the optimizer
    collects trainable ones only). Returns the frozen parameters' names."""
    frozen = []
    for name, param in model.named_parameters():
        if "lora_" not in name or layer_index(name) is None:
            continue
        keep = trains(layer_index(name))  # type: ignore[arg-type]
        param.requires_grad_(keep)
        if not keep:
            frozen.append(name)
    return frozen


def freeze_first_layer(model: torch.nn.Module) -> list[str]:
    """Stop layer 0's LoRA parameters from training."""
    first = layer_index(first_layer_modules([n for n, _ in model.named_parameters()])[0])
    return set_trainable(model, lambda layer: layer != first)


def scale_update(state: LoraState, reference: LoraState, scale: float) -> LoraState:
    """reference + scale * (state - reference), key by key, float32."""
    return {
        k: (reference[k] + np.float32(scale) * (np.asarray(state[k]) - reference[k])).astype(np.float32)
        for k in state
    }


def scale_snapshots(snapshots: np.ndarray, reference: np.ndarray, scale: float) -> np.ndarray:
    if snapshots.size == 0:
        return snapshots
    return (reference[None, :] + np.float32(scale) * (snapshots - reference[None, :])).astype(np.float32)


def splice(state: LoraState, donor: LoraState, keys: Sequence[str]) -> LoraState:
    """`state` with the tensors under `keys` taken from `donor` (copies: neither input is changed)."""
    spliced = set(keys)
    return {k: np.array(donor[k] if k in spliced else state[k], np.float32) for k in state}


def stale_last_row(snapshots: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The snapshots with the last row replaced by `reference` (the global: no movement)."""
    out = np.array(snapshots, np.float32)
    out[-1] = reference
    return out


class PenalisedLoss:
    """An attacker's objective: the response loss plus `weight * penalty()` (the penalty reads the LoRA
    parameters being trained); `penalties` records each step's penalty."""

    def __init__(self, model: PeftModel, penalty: Callable[[], torch.Tensor], weight: float) -> None:
        self._model = model
        self._penalty = penalty
        self._weight = weight
        self.penalties: list[float] = []

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        penalty = self._penalty()
        self.penalties.append(float(penalty.detach()))
        return response_loss(self._model, batch) + self._weight * penalty


def probe_penalty(model: torch.nn.Module, probes: Sequence[LogisticProbe]) -> Callable[[], torch.Tensor]:
    """Sum of each probe's p(malicious) of the delta since now (the start of the branch about to train),
    over the tensors that probe reads."""
    by_key = lora_parameters(model)
    terms = []
    for probe in probes:
        params = [by_key[k] for k in probe.keys]
        start = torch.cat([p.detach().reshape(-1) for p in params]).clone().to(torch.float32)
        weight = torch.from_numpy(probe.weight.copy()).to(start.device)  # the adapter's device
        terms.append((params, start, weight, probe))

    def penalty() -> torch.Tensor:
        total = torch.zeros((), device=terms[0][1].device)
        for params, start, weight, probe in terms:
            current = torch.cat([p.reshape(-1) for p in params]).to(torch.float32)
            total = total + torch_probe_score(current - start, weight, probe.bias, probe.normalize)
        return total

    return penalty


def fit_surrogate(
    benign: np.ndarray, harmful: np.ndarray, keys: Sequence[str], l2: float = 1e-3, steps: int = 500
) -> LogisticProbe:
    """The black-box attacker's own probe: L2 logistic regression on its l2-normalised deltas (rows), by
    full-batch gradient descent (a handful of rows: closed-form-cheap, deterministic)."""
    x = np.concatenate([benign, harmful]).astype(np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y = np.concatenate([np.zeros(len(benign)), np.ones(len(harmful))])
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ w + b)))
        w -= 1.0 * (x.T @ (p - y) / len(y) + l2 * w)
        b -= 1.0 * float(np.mean(p - y))
    return LogisticProbe(w.astype(np.float32), float(b), True, tuple(keys))
