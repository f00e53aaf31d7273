"""A toy LoRA layout and a planted linear probe over it, for the tests that need an adapter but no model.

Two layers of q/v LoRA at r = 2 on a hidden size of 6 (q out 6, v out 3): small enough to reason about by
hand, shaped like PEFT's keys so every parser, feature and probe path treats it as a real adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from probes.artifact import export_linear_probe
from shared.config import LoraSettings
from shared.features import FeatureSpec

PREFIX = "base_model.model.model.layers"
R, HIDDEN, KV = 2, 6, 3
QV_OUT: Mapping[str, int] = {"q_proj": HIDDEN, "v_proj": KV}


def toy_adapter(
    b_value: float | None = None,
    *,
    seed: int = 0,
    layers: int = 2,
    r: int = R,
    outputs: Mapping[str, int] = QV_OUT,
) -> dict[str, np.ndarray]:
    """A ~ N(0, 1) from `seed`; B every entry `b_value`, or N(0, 1) too (drawn after each A) when None."""
    rng = np.random.default_rng(seed)
    state = {}
    for layer in range(layers):
        for module, out in outputs.items():
            key = f"{PREFIX}.{layer}.self_attn.{module}"
            state[f"{key}.lora_A.weight"] = rng.normal(size=(r, HIDDEN)).astype(np.float32)
            b = rng.normal(size=(out, r)) if b_value is None else np.full((out, r), b_value)
            state[f"{key}.lora_B.weight"] = b.astype(np.float32)
    return state


def export_toy_probe(
    directory: Path,
    weight: np.ndarray,
    spec: FeatureSpec,
    *,
    base_model: str = "toy-model",
    fingerprint: str = "f" * 16,
    lora: LoraSettings | None = None,
    threshold: float = 0.8,
) -> None:
    """A linear probe (bias 0) at `directory`, its id the directory's name."""
    export_linear_probe(
        directory,
        directory.name,
        np.asarray(weight, np.float32),
        0.0,
        spec,
        base_model=base_model,
        fingerprint=fingerprint,
        lora=lora or LoraSettings(r=R),
        threshold=threshold,
        training_data_hash="0" * 16,
    )
