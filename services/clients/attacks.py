"""Adaptive attackers: malicious clients that know the defense (E6). Each is selected by name.

- `mixing`: the harmful shard diluted with benign rows (`benign_share` of the shard; population.py);
- `freeze_probe_layer`: trains every LoRA module except layer 0's, the one the probe reads;
- `scaling`: boosts the update: local = global + `scale` * (local - global), snapshots alike (consistent
  with the adapter the server receives);
- `probe_penalty`: adds `penalty_weight` * p(malicious) of the *published* probe (its ONNX weights and
  manifest ship with the project) to the training loss, scored on the layer-0 B delta since the start of
  the branch (the step features of the main branch, the shadow features of the shadow branch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.lora_state import LoraState, first_layer_b_keys, layer_index

AttackKind = Literal["none", "mixing", "freeze_probe_layer", "scaling", "probe_penalty"]
ATTACKS: tuple[str, ...] = ("none", "mixing", "freeze_probe_layer", "scaling", "probe_penalty")


class AttackConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: AttackKind = "none"
    benign_share: float = Field(0.5, ge=0, lt=1, description="mixing: benign rows' share of the shard.")
    scale: float = Field(3.0, gt=0, description="scaling: factor on the update's delta.")
    penalty_weight: float = Field(1.0, ge=0, description="probe_penalty: lambda on the probe's score.")
    probe_dir: str | None = Field(None, description="probe_penalty: the published probe's artifact dir.")

    @model_validator(mode="after")
    def _probe_for_penalty(self) -> AttackConfig:
        if self.kind == "probe_penalty" and not self.probe_dir:
            raise ValueError("probe_penalty needs probe_dir: the published probe the attacker evades")
        return self

    def label(self) -> str:
        detail = {
            "mixing": f"benign {self.benign_share:g}",
            "scaling": f"x{self.scale:g}",
            "probe_penalty": f"lambda {self.penalty_weight:g}",
        }.get(self.kind)
        return f"{self.kind} ({detail})" if detail else self.kind


def probe_logistic(probe: Any) -> tuple[np.ndarray, float, bool]:
    """(weight [dim], bias, l2-normalise) read from a published probe (probes.artifact.LoadedProbe)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(probe.onnx_bytes).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return (
        np.asarray(init["weight"], np.float32).reshape(-1),
        float(np.asarray(init["bias"]).reshape(-1)[0]),
        probe.manifest.feature_spec.normalize == "l2",
    )


def load_probe_logistic(probe_dir: str) -> tuple[np.ndarray, float, bool]:
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


def freeze_first_layer(model: torch.nn.Module) -> list[str]:
    """Stop layer 0's LoRA parameters from training (the optimizer only collects trainable ones)."""
    names = first_layer_modules([n for n, _ in model.named_parameters()])
    params = dict(model.named_parameters())
    for name in names:
        params[name].requires_grad_(False)
    return names


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


def first_layer_b(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Layer 0's lora_B parameters in the probe's key order (sorted PEFT keys, adapter name dropped)."""
    adapter = getattr(model, "active_adapter", "default")
    by_key = {n.replace(f".{adapter}.", "."): p for n, p in model.named_parameters() if "lora_" in n}
    return [by_key[k] for k in first_layer_b_keys(list(by_key))]


class PenalisedModel:
    """The PEFT model with `loss + weight * penalty()` (the local loop only calls it and reads `.loss`;
    every other attribute is the wrapped model's)."""

    def __init__(self, model: torch.nn.Module, penalty: Callable[[], torch.Tensor], weight: float) -> None:
        self._model = model
        self._penalty = penalty
        self._weight = weight
        self.penalties: list[float] = []

    def __call__(self, **batch: torch.Tensor) -> Any:
        output = self._model(**batch)
        penalty = self._penalty()
        self.penalties.append(float(penalty.detach()))
        output.loss = output.loss + self._weight * penalty
        return output

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def probe_penalty(
    model: torch.nn.Module, probe: tuple[np.ndarray, float, bool]
) -> Callable[[], torch.Tensor]:
    """p(malicious) of layer 0's B delta since now (the start of the branch about to train)."""
    weight_np, bias, normalize = probe
    params = first_layer_b(model)
    start = torch.cat([p.detach().reshape(-1) for p in params]).clone()
    weight = torch.from_numpy(weight_np.copy()).to(start.device)  # the adapter's device (a GPU client)

    def penalty() -> torch.Tensor:
        current = torch.cat([p.reshape(-1) for p in params]).to(torch.float32)
        return torch_probe_score(current - start, weight, bias, normalize)

    return penalty
