"""What the server verifies about an update before it weighs it (pure: no I/O).

A client's snapshots, counts and claims are its word; what the server decides on is computed from what it
aggregates: Δ = submitted adapter − the global it issued for the round (docs/threat_model.md).

- **Reported snapshots** (`verify_last_snapshot`): the last step's row must equal the adapter's own feature
  tensors (`spec.raw(adapter)`), float32-exact — an honest client snapshots the very tensors it submits.
  Earlier rows are states the server never sees: they may only lower trust (defenses/verified_level.py).
  Shadow rows are a branch only the client executes: no check is possible (trusted execution only).
- **Structure** (`structural_findings`): dtype as issued (keys and shapes: `validate_lora_state`); every
  LoRA matrix moved (a Δ exactly zero is a frozen or zeroed module); every layer's ‖Δ‖ at least
  `layer_floor` × the update's median layer ‖Δ‖ (a frozen layer dressed up with noise); inside a calibrated
  per-layer envelope when one is set (`calibrate_envelope`). Refused (422) or flagged (factor capped).
- **Magnitude**: norm_bound.py.

`resolved(verified_level)` fills the defaults: on under the verified levels (the deployable default),
off under the method's levels and the baselines, whose published behaviour the experiments reproduce;
an operator may switch either on for any defense.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.aggregator.norm_bound import delta_norm
from shared.features import FeatureSpec
from shared.lora_state import LoraState, layer_index
from shared.updates import ClientUpdate

OverBound = Literal["clip", "refuse", "off"]
Structure = Literal["refuse", "flag", "off"]


class VerificationSettings(BaseModel):
    """The server's checks on every update (SAFE_FEDLLM_AGGREGATOR_VERIFICATION__*)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    over_bound: OverBound | None = Field(
        None,
        description=(
            "An update whose ‖Δ‖ exceeds the bound: clip it to the bound (decision-logged), refuse it (422; "
            "needs norm_bound) or off. None: clip under a verified level, off otherwise."
        ),
    )
    norm_bound: float | None = Field(
        None,
        gt=0,
        description=(
            "Calibrated bound on ‖Δ‖₂ (calibrate_norm_bound on benign updates of this task's budget). None: "
            "round_margin × the round's median ‖Δ‖, which holds only while honest clients are the majority."
        ),
    )
    round_margin: float = Field(1.0, gt=0, description="Margin on the round's median norm (no norm_bound).")
    structure: Structure | None = Field(
        None,
        description=(
            "Structural findings (frozen module or layer, dtype, outside the envelope): refuse (422), flag "
            "(factor capped at flagged_factor; levels only) or off. None: refuse under a verified level."
        ),
    )
    flagged_factor: float = Field(0.0, ge=0, le=1, description="Factor cap of a structurally flagged update.")
    layer_floor: float = Field(
        0.01, ge=0, lt=1, description="A layer moved less than this × the update's median layer ‖Δ‖: frozen."
    )
    layer_envelope: dict[int, tuple[float, float]] | None = Field(
        None, description="Per layer index, [low, high] of ‖Δ‖ from benign updates (calibrate_envelope)."
    )

    @model_validator(mode="after")
    def _refuse_needs_a_bound(self) -> VerificationSettings:
        if self.over_bound == "refuse" and self.norm_bound is None:
            raise ValueError(
                "over_bound=refuse needs a calibrated norm_bound (a round's median is known at close)"
            )
        return self

    def resolved(self, verified_level: bool) -> VerificationSettings:
        """The settings with None replaced by the defense's default (on under a verified level)."""
        return self.model_copy(
            update={
                "over_bound": self.over_bound or ("clip" if verified_level else "off"),
                "structure": self.structure or ("refuse" if verified_level else "off"),
            }
        )


class VerificationError(ValueError):
    """An update the server refuses; `check` names the failed check (metric label, decision log)."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


@dataclass(frozen=True)
class Finding:
    check: str  # frozen_tensor | frozen_layer | envelope | dtype
    detail: str


def verify_last_snapshot(update: ClientUpdate, spec: FeatureSpec) -> None:
    """Raise VerificationError unless the last b_snapshots row is the adapter's feature tensors, exactly."""
    if update.b_snapshots.size == 0:
        return
    expected = spec.raw(update.lora_state)
    last = np.asarray(update.b_snapshots[-1], np.float32)
    if last.shape != expected.shape or not np.array_equal(last, expected):
        differing = int(np.sum(last != expected)) if last.shape == expected.shape else expected.size
        raise VerificationError(
            "snapshot_mismatch",
            f"the last b_snapshots row differs from the submitted adapter's {', '.join(spec.keys[:2])}"
            f"{'...' if len(spec.keys) > 2 else ''} in {differing} of {expected.size} values: snapshots must "
            "be taken from the adapter that is submitted",
        )


def layer_norms(adapter: Mapping[str, np.ndarray], issued: Mapping[str, np.ndarray]) -> dict[int, float]:
    """‖Δ‖₂ per transformer layer, over every LoRA tensor of the layer (float64)."""
    squares: dict[int, float] = {}
    for key, reference in issued.items():
        layer = layer_index(key)
        if layer is None:
            continue
        delta = np.asarray(adapter[key], np.float64) - np.asarray(reference, np.float64)
        squares[layer] = squares.get(layer, 0.0) + float(np.sum(delta * delta))
    return {layer: float(np.sqrt(value)) for layer, value in sorted(squares.items())}


def structural_findings(
    adapter: LoraState, issued: LoraState, settings: VerificationSettings, local_steps: int
) -> list[Finding]:
    """What is wrong with the update's structure (empty: nothing). Keys and shapes are checked before."""
    findings = []
    for key, reference in issued.items():
        if adapter[key].dtype != reference.dtype:
            findings.append(Finding("dtype", f"{key}: dtype {adapter[key].dtype}, issued {reference.dtype}"))
        if "lora_" not in key or not np.array_equal(adapter[key], reference):
            continue
        # A moves only through B: with the issued B zero (the init) a single local step leaves A unchanged.
        partner = key.replace("lora_A", "lora_B")
        if "lora_A" in key and local_steps == 1 and partner in issued and not np.any(issued[partner]):
            continue
        findings.append(Finding("frozen_tensor", f"{key}: Δ is exactly zero (frozen or zeroed)"))
    norms = layer_norms(adapter, issued)
    if norms:
        median = float(np.median(list(norms.values())))
        for layer, norm in norms.items():
            if median > 0 and norm < settings.layer_floor * median:
                findings.append(
                    Finding(
                        "frozen_layer",
                        f"layer {layer}: ‖Δ‖ {norm:.3g} < {settings.layer_floor:g} × the update's median "
                        f"layer ‖Δ‖ {median:.3g}",
                    )
                )
            envelope = (settings.layer_envelope or {}).get(layer)
            if envelope is not None and not envelope[0] <= norm <= envelope[1]:
                findings.append(
                    Finding(
                        "envelope",
                        f"layer {layer}: ‖Δ‖ {norm:.3g} outside the benign envelope "
                        f"[{envelope[0]:.3g}, {envelope[1]:.3g}]",
                    )
                )
    return findings


def calibrate_envelope(
    benign: Sequence[tuple[LoraState, LoraState]], margin: float = 2.0
) -> dict[int, tuple[float, float]]:
    """Per layer, [min / margin, max × margin] of benign updates' layer ‖Δ‖ ((adapter, issued) pairs)."""
    if not benign or margin < 1:
        raise ValueError("calibration needs benign updates and a margin >= 1")
    per_layer: dict[int, list[float]] = {}
    for adapter, issued in benign:
        for layer, norm in layer_norms(adapter, issued).items():
            per_layer.setdefault(layer, []).append(norm)
    return {layer: (min(v) / margin, max(v) * margin) for layer, v in per_layer.items()}


def describe(findings: Sequence[Finding]) -> str:
    return "; ".join(f.detail for f in findings)


def check_update(
    update: ClientUpdate, issued: LoraState, settings: VerificationSettings, local_steps: int
) -> list[Finding]:
    """Raise VerificationError for what the (resolved) settings refuse; return what they only flag."""
    findings = []
    if settings.structure != "off":
        findings = structural_findings(update.lora_state, issued, settings, local_steps)
    if findings and settings.structure == "refuse":
        raise VerificationError("structure", describe(findings))
    if settings.over_bound == "refuse" and settings.norm_bound is not None:
        norm = delta_norm(update.lora_state, issued)
        if norm > settings.norm_bound:
            raise VerificationError(
                "norm_bound", f"‖Δ‖ {norm:.4g} exceeds the calibrated bound {settings.norm_bound:.4g}"
            )
    return findings
