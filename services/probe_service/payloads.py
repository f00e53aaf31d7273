"""Request bodies -> raw feature rows, in the three forms the API accepts.

- a PEFT adapter: adapter_model.safetensors (+ adapter_config.json naming base model, r, targets);
- a raw safetensors adapter with the LoRA config in query parameters or headers;
- already-extracted layer-0 B snapshots: a safetensors tensor `snapshots` [n, dim] or JSON.

Only the probe's feature tensors are read out of an adapter (zero-copy); everything is validated first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from probes.manifest import ProbeManifest
from services.probe_service.errors import InvalidUpdate
from services.probe_service.schemas import SNAPSHOTS_TENSOR
from services.probe_service.scoring import (
    ProbeBank,
    ProbeSelector,
    adapter_features,
    adapter_lora_shape,
    check_snapshots,
)
from shared.bounded_json import JsonError
from shared.bounded_json import loads as bounded_loads
from shared.safetensors_reader import SafetensorsFormatError, read_header, read_tensors


@dataclass
class ScoreInput:
    selector: ProbeSelector
    adapters: list[bytes] = field(default_factory=list)
    reference: bytes | None = None
    snapshots: np.ndarray | None = None  # [n, dim]

    @property
    def count(self) -> int:
        return len(self.adapters) if self.snapshots is None else int(np.atleast_2d(self.snapshots).shape[0])


def selector_from_params(params: Mapping[str, str]) -> ProbeSelector:
    """probe_id, base_model, r and target_modules (comma-separated) from query parameters or headers."""
    r = params.get("r") or params.get("lora_r")
    targets = params.get("target_modules")
    try:
        lora_r = int(r) if r else None
    except ValueError as error:
        raise InvalidUpdate(f"r={str(r)[:32]!r} is not an integer") from error
    if lora_r is not None and lora_r < 1:
        raise InvalidUpdate(f"r={lora_r} must be a positive integer")
    return ProbeSelector(
        probe_id=params.get("probe_id") or None,
        base_model=params.get("base_model") or None,
        lora_r=lora_r,
        target_modules=tuple(t.strip() for t in targets.split(",") if t.strip()) if targets else None,
    )


def selector_from_adapter_config(blob: bytes, overrides: ProbeSelector) -> ProbeSelector:
    """Fill what the caller did not say from PEFT's adapter_config.json (fields type-checked)."""
    try:
        config = bounded_loads(blob)
    except JsonError as error:
        raise InvalidUpdate(f"adapter_config.json: {error}") from error
    if not isinstance(config, dict):
        raise InvalidUpdate("adapter_config.json must be a JSON object")
    peft_type = config.get("peft_type", "LORA")
    if peft_type != "LORA":
        raise InvalidUpdate(f"adapter_config.json: peft_type {str(peft_type)[:32]!r}, expected 'LORA'")
    base_model = config.get("base_model_name_or_path")
    if base_model is not None and not isinstance(base_model, str):
        raise InvalidUpdate("adapter_config.json: base_model_name_or_path must be a string")
    targets = config.get("target_modules")
    if isinstance(targets, str):  # PEFT allows a regex string; it cannot be compared, so ignore it
        targets = None
    if targets is not None and not (isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
        raise InvalidUpdate("adapter_config.json: target_modules must be a list of strings or a string")
    r = config.get("r")
    if r is not None and (not isinstance(r, int) or isinstance(r, bool) or r < 1):
        raise InvalidUpdate(f"adapter_config.json: r={str(r)[:32]} is not a positive integer")
    return replace(
        overrides,
        base_model=overrides.base_model or base_model,
        lora_r=overrides.lora_r if overrides.lora_r is not None else r,
        target_modules=overrides.target_modules or (tuple(targets) if targets else None),
    )


def input_from_safetensors(blob: bytes, selector: ProbeSelector) -> ScoreInput:
    """A raw safetensors body: the snapshot form when it holds `snapshots`, otherwise an adapter."""
    header = _header(blob, "body")
    if SNAPSHOTS_TENSOR in header:
        snapshots = _read(blob, [SNAPSHOTS_TENSOR], "body")[SNAPSHOTS_TENSOR]
        return ScoreInput(selector, snapshots=snapshots)
    return ScoreInput(selector, adapters=[blob])


def input_from_json(body: bytes, selector: ProbeSelector) -> ScoreInput:
    """A JSON body {"snapshots": [[...], ...], "probe_id"?: str, "base_model"?: str}, types checked."""
    try:
        payload = bounded_loads(body, max_depth=3)
    except JsonError as error:
        raise InvalidUpdate(f"body: {error}") from error
    if not isinstance(payload, dict):
        raise InvalidUpdate("JSON body must be an object with 'snapshots'")
    snapshots = payload.get(SNAPSHOTS_TENSOR)
    if snapshots is None:
        raise InvalidUpdate("JSON bodies carry snapshots: {'snapshots': [[...], ...]}")
    for name in ("probe_id", "base_model"):
        if payload.get(name) is not None and not isinstance(payload[name], str):
            raise InvalidUpdate(f"{name} must be a string")
    if not isinstance(snapshots, list):
        raise InvalidUpdate("snapshots must be a list of rows of numbers")
    try:
        array = np.asarray(snapshots)
    except ValueError as error:
        raise InvalidUpdate(f"snapshots must be a rectangular list of numbers: {error}") from error
    if array.dtype.kind not in "iuf":  # strings, booleans, objects, ragged rows
        raise InvalidUpdate("snapshots must be a rectangular list of numbers")
    merged = replace(
        selector,
        probe_id=selector.probe_id or payload.get("probe_id"),
        base_model=selector.base_model or payload.get("base_model"),
    )
    return ScoreInput(merged, snapshots=array.astype(np.float32))


def to_features(bank: ProbeBank, request: ScoreInput) -> tuple[ProbeManifest, np.ndarray]:
    """Resolve the probe and build the raw feature rows [n, dim] (float32, finite)."""
    if request.snapshots is not None:
        width = int(np.shape(request.snapshots)[-1]) if np.ndim(request.snapshots) in (1, 2) else None
        manifest = bank.resolve(replace(request.selector, dim=width))
        return manifest, check_snapshots(manifest.feature_spec, request.snapshots, manifest.probe_id)
    if not request.adapters:
        raise InvalidUpdate("no update in the request")
    # What the adapters are, from their own tensors (never only from what the request claims).
    shapes = set()
    for i, blob in enumerate(request.adapters):
        what = f"adapter {i}" if len(request.adapters) > 1 else "adapter"
        try:
            shapes.add(adapter_lora_shape(_header(blob, what)))
        except InvalidUpdate as error:
            raise InvalidUpdate(
                f"{what}: {error.message}".replace(f"{what}: {what}: ", f"{what}: ")
            ) from error
    if len(shapes) > 1:
        raise InvalidUpdate(f"adapters of different LoRA shapes in one request: {sorted(shapes)}")
    manifest = bank.resolve(request.selector, adapter_shape=shapes.pop())
    spec = manifest.feature_spec
    reference = _read(request.reference, spec.keys, "reference") if request.reference is not None else None
    rows = []
    for i, blob in enumerate(request.adapters):
        what = f"adapter {i}" if len(request.adapters) > 1 else "adapter"
        try:
            rows.append(adapter_features(spec, _read(blob, spec.keys, what), reference))
        except InvalidUpdate as error:
            raise InvalidUpdate(f"{what}: {error.message}") from error
    return manifest, np.stack(rows)


def _header(blob: bytes, what: str) -> dict:
    try:
        return read_header(blob)[0]
    except SafetensorsFormatError as error:
        raise InvalidUpdate(f"{what}: not a valid safetensors file: {error}") from error


def _read(blob: bytes, keys: tuple[str, ...] | list[str], what: str) -> dict[str, np.ndarray]:
    try:
        return read_tensors(blob, keys, strict=False)
    except SafetensorsFormatError as error:
        raise InvalidUpdate(f"{what}: not a valid safetensors file: {error}") from error
