"""A planted probe over a synthetic adapter layout: adapters along +w are malicious, along -w benign."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from shared.features import FeatureSpec
from tests.toy_lora import R, export_toy_probe, toy_adapter


def adapter_state(seed: int = 0, layers: int = 2, r: int = R) -> dict[str, np.ndarray]:
    return toy_adapter(seed=seed, layers=layers, r=r)


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
    export_toy_probe(tmp_path / "toy-probe", weight, spec)
    return PlantedProbe(tmp_path, "toy-probe", spec, weight)
