"""Probe selection and scoring, free of Ray and HTTP: the logic every replica runs.

A `ProbeBank` holds the registry's manifests (checked on load) and opens an ONNX Runtime session per probe
on first use. Callers pick a probe by id, or by the update's base model and LoRA shape (and, for bare
snapshots, the feature width); a miss says which probes exist and how to train the missing one.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from probes.artifact import INPUT_NAME, LoadedProbe, ProbeArtifactError
from probes.manifest import ProbeManifest
from probes.registry import ProbeRegistry, UnknownProbeError
from services.probe_service.errors import InvalidUpdate, ProbeNotFound
from shared.echo import printable, quoted
from shared.features import FeatureSpec
from shared.lora_state import LoraStateError, first_layer_b_keys

# Hub ids (and their last path segment) of the model zoo's base models, lower-cased -> zoo name. Kept here
# rather than importing shared.model_zoo, which pulls in torch; tests pin it against the zoo's names.
MODEL_ALIASES = {
    "huggingfacetb/smollm2-135m-instruct": "smollm2-135m",
    "smollm2-135m-instruct": "smollm2-135m",
}
ZOO_MODELS = ("smollm2-135m", "tiny-llama")


def canonical_model_name(name: str) -> str:
    """The zoo name for a hub id (`HuggingFaceTB/SmolLM2-135M-Instruct` -> `smollm2-135m`), else the
    last path segment (PEFT writes local paths such as `/cache/tiny-llama` into adapter_config.json)."""
    stripped = name.strip().rstrip("/")
    lowered = stripped.lower()
    last = stripped.rsplit("/", 1)[-1]
    return MODEL_ALIASES.get(lowered) or MODEL_ALIASES.get(last.lower()) or last


AdapterShape = tuple[int | None, tuple[str, ...]]  # (LoRA rank, sorted target modules) of layer 0


def adapter_lora_shape(header: Mapping[str, Mapping]) -> AdapterShape:
    """Rank and target modules of an adapter, read from its layer-0 lora_B tensor names and shapes."""
    try:
        keys = first_layer_b_keys(list(header))
    except LoraStateError as error:
        raise InvalidUpdate(str(error)) from error
    ranks = {tuple(header[k]["shape"])[-1] for k in keys if len(header[k]["shape"]) == 2}
    targets = tuple(sorted({k.split(".lora_B")[0].rsplit(".", 1)[-1] for k in keys}))
    return (ranks.pop() if len(ranks) == 1 else None), targets


@dataclass(frozen=True)
class ProbeSelector:
    """How a request names its probe: an explicit id wins; otherwise the base model (+ LoRA shape, width)."""

    probe_id: str | None = None
    base_model: str | None = None
    lora_r: int | None = None
    target_modules: tuple[str, ...] | None = None
    dim: int | None = None
    # Feature policies the caller can use, preferred first (None: any, newest wins). Levels that read
    # reported snapshots need `first_B`; the verified level prefers a probe of the whole update.
    policies: tuple[str, ...] | None = None
    # The exact base weights (+ alignment) the caller's updates come from (`LoadedModel.fingerprint`): a
    # probe made on other weights reads another distribution of updates. REST requests cannot know it.
    base_fingerprint: str | None = None

    def describe(self, with_model: bool = True) -> str:
        parts = [f"base model {quoted(self.base_model or '')}"] if with_model else []
        if self.lora_r is not None:
            parts.append(f"r={self.lora_r}")
        if self.target_modules:
            parts.append(f"targets {printable(str(list(self.target_modules)), 128)}")
        if self.dim is not None:
            parts.append(f"{self.dim} features")
        if self.policies is not None:
            parts.append(f"features {list(self.policies)}")
        if with_model and self.base_fingerprint is not None:
            parts.append(f"base weights {self.base_fingerprint}")
        return ", ".join(parts)


class ProbeBank:
    def __init__(self, artifacts_dir: Path, ort_threads: int = 1) -> None:
        self.registry = ProbeRegistry(artifacts_dir)
        self.ort_threads = ort_threads
        self._probes: dict[str, LoadedProbe] = {}
        self._sessions: dict[str, object] = {}
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> None:
        """Re-read the registry (a probe exported after start becomes visible; broken ones are skipped)."""
        probes = {}
        for probe_id in self.registry.ids():
            try:
                probes[probe_id] = self.registry.get(probe_id)
            except ProbeArtifactError:
                continue
        with self._lock:
            self._probes = probes
            self._sessions = {k: v for k, v in self._sessions.items() if k in probes}

    def manifests(self) -> list[ProbeManifest]:
        return [p.manifest for p in self._probes.values()]

    def manifest(self, probe_id: str) -> ProbeManifest:
        if probe_id not in self._probes:
            self.refresh()
        if probe_id not in self._probes:
            try:
                self.registry.get(probe_id)  # says why: unknown id, or a broken artifact
            except (UnknownProbeError, ProbeArtifactError) as error:
                raise ProbeNotFound(str(error)) from error
            raise ProbeNotFound(f"probe {quoted(probe_id)} is not loaded")
        return self._probes[probe_id].manifest

    def resolve(self, selector: ProbeSelector, adapter_shape: AdapterShape | None = None) -> ProbeManifest:
        """The probe for this request; an adapter's own rank and targets must fit it (422 otherwise)."""
        if adapter_shape is not None:
            selector = _with_adapter_shape(selector, adapter_shape)
        if selector.probe_id:
            manifest = self.manifest(selector.probe_id)
            if selector.base_model and not _fits(manifest, ProbeSelector(base_model=selector.base_model)):
                raise InvalidUpdate(
                    f"the adapter was trained on base model {canonical_model_name(selector.base_model)!r}; "
                    f"probe {manifest.probe_id!r} was made for {manifest.base_model.name!r}"
                )
            if selector.dim is not None and selector.dim != manifest.feature_spec.dim:
                raise InvalidUpdate(
                    f"snapshot width {selector.dim}, probe {manifest.probe_id!r} expects "
                    f"{manifest.feature_spec.dim} (layer-0 lora_B of {list(manifest.feature_spec.keys)})"
                )
            if not _fits(manifest, replace(selector, base_model=None, dim=None, base_fingerprint=None)):
                lora = manifest.lora
                raise InvalidUpdate(
                    f"the update has {selector.describe(with_model=False)}; probe {manifest.probe_id!r} "
                    f"was trained for r={lora.r}, targets {sorted(lora.target_modules)}"
                )
            if not _fits(manifest, ProbeSelector(base_fingerprint=selector.base_fingerprint)):
                made_for = manifest.base_model.fingerprint
                raise ProbeNotFound(
                    f"probe {manifest.probe_id!r} was made for base weights {made_for}, this model is "
                    f"{selector.base_fingerprint}; rebuild it with safe-fedllm probe build"
                )
            return manifest
        if not selector.base_model:
            raise InvalidUpdate("name the probe: give probe_id, or base_model (adapter_config.json has it)")
        matches = [m for m in self.manifests() if _fits(m, selector)]
        if not matches:
            known = (
                ", ".join(
                    f"{m.probe_id} ({m.base_model.name}, base weights {m.base_model.fingerprint})"
                    for m in self.manifests()
                )
                or "none"
            )
            model = canonical_model_name(selector.base_model)
            build = (
                f"safe-fedllm probe build --model {model}"
                if model in ZOO_MODELS
                else "safe-fedllm probe build --model <name or checkpoint directory>"
            )
            raise ProbeNotFound(
                f"no probe for {selector.describe()}; registered: {known}. Train one with {build} && "
                "safe-fedllm probe train ... && safe-fedllm probe export ..."
            )
        preference = selector.policies or ()
        return max(
            matches,
            key=lambda m: (
                -preference.index(m.feature_spec.policy) if preference else 0,
                m.created_at,
            ),
        )

    def score(self, probe_id: str, features: np.ndarray) -> np.ndarray:
        """Probabilities [n] for raw deltas [n, dim] (normalisation happens inside the graph)."""
        session = self._session(probe_id)
        batch = np.ascontiguousarray(features, dtype=np.float32)
        return session.run(None, {INPUT_NAME: batch})[0]  # type: ignore[attr-defined]

    def _session(self, probe_id: str) -> object:
        session = self._sessions.get(probe_id)
        if session is None:
            self.manifest(probe_id)
            with self._lock:
                session = self._sessions.get(probe_id)
                if session is None:
                    session = self._probes[probe_id].session(self.ort_threads)
                    self._sessions[probe_id] = session
        return session


def adapter_features(
    spec: FeatureSpec,
    tensors: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """The raw feature [dim] of one adapter against a reference (None: the fixed init, whose B is zero)."""
    try:
        spec.check_compatible(tensors)
        if reference is not None:
            spec.check_compatible(reference)
    except LoraStateError as error:
        raise InvalidUpdate(str(error)) from error
    for name, source in (("adapter", tensors), ("reference", reference or {})):
        for key in spec.keys:
            if key in source:
                check_finite(np.asarray(source[key]), f"{name} tensor {key}")
    return spec.raw(tensors, reference)


def check_snapshots(spec: FeatureSpec, snapshots: np.ndarray, probe_id: str) -> np.ndarray:
    x = np.asarray(snapshots)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != spec.dim:
        raise InvalidUpdate(
            f"snapshots of shape {list(np.shape(snapshots))}, probe {quoted(probe_id)} "
            f"expects [n, {spec.dim}] "
            f"(row-major {', '.join(f'{k} {list(s)}' for k, s in zip(spec.keys, spec.shapes, strict=True))})"
        )
    check_finite(x, "snapshots")
    return x.astype(np.float32, copy=False)


def check_finite(x: np.ndarray, what: str) -> None:
    if not np.issubdtype(x.dtype, np.floating):
        raise InvalidUpdate(f"{what}: dtype {x.dtype}, expected floating point")
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        value = x[tuple(bad)]
        raise InvalidUpdate(f"{what}: {value} at index {bad.tolist()} ({int((~finite).sum())} non-finite)")


def _with_adapter_shape(selector: ProbeSelector, shape: AdapterShape) -> ProbeSelector:
    """The adapter's tensors decide its rank and targets; a request claiming otherwise is refused."""
    rank, targets = shape
    if selector.lora_r is not None and rank is not None and selector.lora_r != rank:
        raise InvalidUpdate(f"the request says r={selector.lora_r} but the adapter's tensors have r={rank}")
    if selector.target_modules and sorted(selector.target_modules) != list(targets):
        raise InvalidUpdate(
            f"the request says targets {sorted(selector.target_modules)} but the adapter's layer-0 lora_B "
            f"tensors are for {list(targets)}"
        )
    return replace(selector, lora_r=rank if rank is not None else selector.lora_r, target_modules=targets)


def _fits(manifest: ProbeManifest, selector: ProbeSelector) -> bool:
    if selector.base_model is not None:
        wanted, name = (
            canonical_model_name(selector.base_model),
            canonical_model_name(manifest.base_model.name),
        )
        if wanted.lower() != name.lower():
            return False
    if selector.lora_r is not None and selector.lora_r != manifest.lora.r:
        return False
    if selector.target_modules and sorted(selector.target_modules) != sorted(manifest.lora.target_modules):
        return False
    if selector.policies is not None and manifest.feature_spec.policy not in selector.policies:
        return False
    if selector.base_fingerprint is not None and selector.base_fingerprint != manifest.base_model.fingerprint:
        return False
    return selector.dim is None or selector.dim == manifest.feature_spec.dim
