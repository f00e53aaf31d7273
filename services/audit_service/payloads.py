"""Audit request parts -> an AuditJob: the probe service's decoders, plus the LoRA checks an audit needs.

An audit applies the adapter to the base, so unlike the probe it must know the adapter's scaling: r,
lora_alpha and targets from adapter_config.json must equal the layout the service holds (a raw safetensors
body is taken to use it). Nothing here is unpickled: adapters are safetensors, configs JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from services.audit_service.bank import AuditJob
from services.probe_service.errors import InvalidUpdate
from services.probe_service.payloads import selector_from_adapter_config
from services.probe_service.scoring import ProbeSelector
from shared.config import LoraSettings
from shared.lora_state import LoraState, LoraStateError
from shared.updates import decode_lora_state

FILE_PARTS = ("adapter", "config", "reference")
# PEFT options that change what the weights mean; the audit applies plain LoRA only.
_UNSUPPORTED = ("use_dora", "use_rslora", "rank_pattern", "alpha_pattern")


def check_adapter_config(blob: bytes, base_model: str | None, held: LoraSettings) -> str | None:
    """The base model the config names (or `base_model` when given); InvalidUpdate if its LoRA differs."""
    selector = selector_from_adapter_config(blob, ProbeSelector(base_model=base_model))
    config = json.loads(blob)  # valid: selector_from_adapter_config parsed it
    for option in _UNSUPPORTED:
        if config.get(option):
            raise InvalidUpdate(
                f"adapter_config.json: {option} is not supported by the audit (plain LoRA only)"
            )
    alpha = config.get("lora_alpha")
    differences = [
        f"{name} {got!r} (held: {want!r})"
        for name, got, want in (
            ("r", selector.lora_r, held.r),
            ("lora_alpha", alpha, held.alpha),
            ("target_modules", sorted(selector.target_modules or ()), sorted(held.target_modules)),
        )
        if got is not None and got != [] and got != want
    ]
    if differences:
        raise InvalidUpdate(f"adapter_config.json: the adapter's LoRA differs: {', '.join(differences)}")
    return selector.base_model


def decode_adapter(blob: bytes, what: str) -> LoraState:
    try:
        return decode_lora_state(blob)
    except LoraStateError as error:
        raise InvalidUpdate(f"{what}: {error}") from error


def job_from_parts(
    files: Mapping[str, list[bytes]], base_model: str | None, held_models: list[str], held: LoraSettings
) -> AuditJob:
    """One adapter (+ optional config and reference) -> a job; the model defaults to the only one held."""
    adapters = files.get("adapter", [])
    if len(adapters) != 1:
        raise InvalidUpdate(f"send exactly one 'adapter' (adapter_model.safetensors); got {len(adapters)}")
    for name, values in files.items():
        if len(values) > 1:
            raise InvalidUpdate(f"part {name!r} appears {len(values)} times; send it once")
    if "config" in files:
        base_model = check_adapter_config(files["config"][0], base_model, held)
    if base_model is None:
        if len(held_models) != 1:
            raise InvalidUpdate(f"say which base model (base_model); held: {', '.join(held_models)}")
        base_model = held_models[0]
    reference = decode_adapter(files["reference"][0], "reference") if "reference" in files else None
    return AuditJob(base_model, decode_adapter(adapters[0], "adapter"), reference)
