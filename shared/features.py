"""The probe's feature spec: one definition used by offline training, the probe service and the aggregator.

A feature is the concatenation, in sorted key order, of row-major flattened LoRA tensors minus a reference
(`first_B`: the lora_B matrices of the lowest-index layer; `all_layers`: A and B of every layer), then
L2-normalised per sample (norms below 1e-12 count as 1), then NaN -> 0 and +-Inf -> +-1e6 (the method's
order). `module_norms` reads the whole update too but keeps one number per LoRA matrix: log of the norm of
its delta (a matrix that did not move gives log 1e-12), so a feature is one value per key; `center`
subtracts each row's mean, which leaves the profile's shape and drops the update's overall scale (the
server bounds the scale separately). It transfers across data writers where raw directions do not (E2).
The spec records keys and shapes, so an adapter from another base model, rank or target set is rejected
with a message that says what differs.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from shared.lora_state import LoraStateError, first_layer_b_keys, layer_index

FEATURE_SPEC_VERSION = "1"
Policy = Literal["first_B", "all_layers", "module_norms"]
Normalization = Literal["l2", "none", "center"]
_NORM_FLOOR = 1e-12
_INF_VALUE = 1e6


class FeatureSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = FEATURE_SPEC_VERSION
    policy: Policy = "first_B"
    normalize: Normalization = "l2"
    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def dim(self) -> int:
        if self.policy == "module_norms":
            return len(self.keys)
        return int(sum(np.prod(shape) for shape in self.shapes))

    @classmethod
    def for_adapter(
        cls, state: Mapping[str, np.ndarray], policy: Policy = "first_B", normalize: Normalization = "l2"
    ) -> FeatureSpec:
        keys = select_keys(list(state), policy)
        return cls(
            policy=policy,
            normalize=normalize,
            keys=tuple(keys),
            shapes=tuple(tuple(state[k].shape) for k in keys),
        )

    def check_compatible(self, state: Mapping[str, np.ndarray]) -> None:
        """Raise LoraStateError naming what differs (keys -> targets/model, shapes -> rank/width)."""
        missing = [k for k in self.keys if k not in state]
        if missing:
            present = sorted(k for k in state if "lora_" in k)[:3]
            raise LoraStateError(
                f"adapter lacks the probe's feature tensors {missing[:3]} (LoRA target modules or base model "
                f"differ; the adapter has e.g. {present})"
            )
        for key, shape in zip(self.keys, self.shapes, strict=True):
            got = tuple(np.shape(state[key]))
            if got != shape:
                what = (
                    "LoRA rank"
                    if got[-1] != shape[-1] and "lora_B" in key
                    else "base model width or LoRA rank"
                )
                raise LoraStateError(f"{key}: shape {got}, probe expects {shape} ({what} differs)")

    def raw(
        self, state: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """The un-normalised delta vector of one adapter state against a reference (None: zeros, i.e. B_0)."""
        self.check_compatible(state)
        parts = []
        for key in self.keys:
            value = np.asarray(state[key], dtype=np.float32).reshape(-1)
            if reference is not None:
                value = value - np.asarray(reference[key], dtype=np.float32).reshape(-1)
            parts.append(value)
        if self.policy == "module_norms":
            return np.asarray([_log_norm(part) for part in parts], dtype=np.float32)
        return np.concatenate(parts)

    def module_norms(self, raw: np.ndarray) -> np.ndarray:
        """[n, keys] log norms of an `all_layers` spec's [n, dim] raw deltas, one column per LoRA matrix."""
        if self.policy != "all_layers":
            raise LoraStateError(f"module norms are read from all_layers deltas, not {self.policy}")
        x = np.atleast_2d(np.asarray(raw, dtype=np.float32))
        bounds = np.cumsum([0, *(int(np.prod(shape)) for shape in self.shapes)])
        return np.stack([_log_norm(x[:, lo:hi], axis=1) for lo, hi in itertools.pairwise(bounds)], axis=1)

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Normalise a [dim] or [n, dim] batch of raw deltas as the probe expects."""
        x = np.atleast_2d(np.asarray(raw, dtype=np.float32))
        if x.shape[-1] != self.dim:
            raise LoraStateError(f"feature length {x.shape[-1]}, probe expects {self.dim}")
        return normalise(x, self.normalize)


def _log_norm(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    norm = np.linalg.norm(np.asarray(x, dtype=np.float64), axis=axis)
    return np.log(np.maximum(norm, _NORM_FLOOR)).astype(np.float32)


def normalise(x: np.ndarray, method: Normalization) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if method == "center":
        with np.errstate(invalid="ignore", over="ignore"):
            x = x - np.nanmean(np.where(np.isfinite(x), x, np.nan), axis=-1, keepdims=True)
    if method == "l2":
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite input is mapped below
            norms = np.linalg.norm(x.astype(np.float64), axis=-1, keepdims=True)
            norms = np.where(norms < _NORM_FLOOR, 1.0, norms)
            x = (x / norms).astype(np.float32)
    return np.nan_to_num(x, nan=0.0, posinf=_INF_VALUE, neginf=-_INF_VALUE)


def select_keys(keys: list[str], policy: Policy) -> list[str]:
    if policy == "first_B":
        return first_layer_b_keys(keys)
    # all_layers and module_norms: every layer's A and B
    selected = sorted(k for k in keys if ("lora_A" in k or "lora_B" in k) and layer_index(k) is not None)
    if not selected:
        raise LoraStateError("adapter has no per-layer LoRA tensors")
    return selected
