"""A planted probe over a synthetic adapter layout: adapters along +w are malicious, along -w benign."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from probes.artifact import export_linear_probe
from shared.config import LoraSettings
from shared.features import FeatureSpec

R, HIDDEN, KV = 2, 6, 3
PREFIX = "base_model.model.model.layers"


def adapter_state(seed: int = 0, layers: int = 2, r: int = R) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    state = {}
    for layer in range(layers):
        for module, out in (("q_proj", HIDDEN), ("v_proj", KV)):
            base = f"{PREFIX}.{layer}.self_attn.{module}"
            state[f"{base}.lora_A.weight"] = rng.normal(size=(r, HIDDEN)).astype(np.float32)
            state[f"{base}.lora_B.weight"] = rng.normal(size=(out, r)).astype(np.float32)
    return state


@dataclass
class PlantedProbe:
    root: Path
    probe_id: str
    spec: FeatureSpec
    weight: np.ndarray

    def adapter(self, malicious: bool, seed: int = 0) -> dict[str, np.ndarray]:
        """A full adapter whose layer-0 B points along +w (malicious) or -w (benign)."""
        state = adapter_state(seed)
        direction = self.weight if malicious else -self.weight
        offset = 0
        for key, shape in zip(self.spec.keys, self.spec.shapes, strict=True):
            size = int(np.prod(shape))
            state[key] = direction[offset : offset + size].reshape(shape).astype(np.float32)
            offset += size
        return state

    def probability(self, features: np.ndarray) -> np.ndarray:
        x = self.spec.transform(features).astype(np.float64)
        return 1 / (1 + np.exp(-(x @ self.weight)))


@pytest.fixture
def planted(tmp_path) -> PlantedProbe:
    spec = FeatureSpec.for_adapter(adapter_state(), "first_B")
    weight = np.random.default_rng(1).normal(size=spec.dim).astype(np.float32) * 3
    export_linear_probe(
        tmp_path / "toy-probe",
        "toy-probe",
        weight,
        0.0,
        spec,
        base_model="toy-model",
        fingerprint="f" * 16,
        lora=LoraSettings(r=R),
        threshold=0.8,
        training_data_hash="0" * 16,
    )
    return PlantedProbe(tmp_path, "toy-probe", spec, weight)
