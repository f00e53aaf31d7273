"""A trained probe between `probe train` and `probe export`: weights (safetensors) + JSON, never pickle."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from probes.classifier import LogisticProbe
from shared.features import FeatureSpec


@dataclass
class ProbeCheckpoint:
    probe_id: str
    weight: np.ndarray  # [dim]
    bias: float
    spec: FeatureSpec
    info: dict  # model, fingerprint, lora, threshold, dataset hash and config, training config, metrics, rows

    @classmethod
    def from_model(
        cls, probe_id: str, model: LogisticProbe, spec: FeatureSpec, info: dict
    ) -> ProbeCheckpoint:
        weight = model.linear.weight.detach().float().numpy().reshape(-1).copy()
        return cls(probe_id, weight, float(model.linear.bias.detach()), spec, info)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        save_file(
            {"weight": self.weight.astype(np.float32), "bias": np.asarray([self.bias], np.float32)},
            directory / "probe.safetensors",
        )
        payload = {"probe_id": self.probe_id, "spec": self.spec.model_dump(mode="json"), "info": self.info}
        (directory / "probe.json").write_text(json.dumps(payload, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> ProbeCheckpoint:
        tensors = load_file(directory / "probe.safetensors")
        payload = json.loads((directory / "probe.json").read_text())
        return cls(
            payload["probe_id"],
            tensors["weight"],
            float(tensors["bias"][0]),
            FeatureSpec.model_validate(payload["spec"]),
            payload["info"],
        )
