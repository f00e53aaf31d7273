"""Which probe a defense uses, and what its manifest tells the defense.

`resolve_probe` is the one way a defense gets its probe (the aggregator server, the simulation, E5): the
newest probe for the model, LoRA shape and the level's input (PROBE_POLICIES), made for exactly these base
weights. A probe built on other weights (the unaligned base, an earlier alignment adapter) reads updates
from another distribution, and its calibrated threshold means nothing there: refused, not used.

`bind_probe` completes the defense settings from the manifest:
- its calibrated threshold and the first local step whose score is evidence (`min_step`), unless the
  operator set them explicitly;
- the shadow branch's lr: shadow steps are only in the probe's distribution when they are trained like the
  probe's trajectories (fixed lr, batch, T from θ^0), so the task tells clients the probe's lr. A client
  batch or T that differs from the probe's is allowed but logged: scores then drift from calibration.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from probes.manifest import ProbeManifest
from services.aggregator.defenses import DefenseSettings
from services.aggregator.inputs import Inputs
from services.aggregator.scoring import PROBE_POLICIES
from shared.config import LocalTrainingConfig, LoraSettings

if TYPE_CHECKING:
    from services.probe_service.scoring import ProbeBank

log = logging.getLogger(__name__)


def resolve_probe(
    bank: ProbeBank,
    *,
    model: str,
    lora: LoraSettings,
    inputs: Inputs,
    base_fingerprint: str,
    probe_id: str | None = None,
) -> ProbeManifest:
    """The probe for a level reading `inputs` of updates to `model` with this LoRA; an explicit
    `probe_id` wins but must still fit. Raises ProbeNotFound (which says what is registered) otherwise."""
    from services.probe_service.scoring import ProbeSelector

    selector = ProbeSelector(
        probe_id,
        model,
        lora.r,
        tuple(lora.target_modules),
        policies=PROBE_POLICIES.get(inputs),
        base_fingerprint=base_fingerprint,
    )
    return bank.resolve(selector)


def bind_probe(
    manifest: ProbeManifest, defense: DefenseSettings, training: LocalTrainingConfig, needs_shadow: bool
) -> tuple[DefenseSettings, LocalTrainingConfig]:
    """(defense settings, local training) completed from the manifest; explicit settings win."""
    updates = {
        name: getattr(manifest, name)
        for name in ("threshold", "min_step")
        if name not in defense.model_fields_set
    }
    defense = defense.model_copy(update=updates)
    probe_training = manifest.training.get("dataset", {})
    if needs_shadow and training.shadow_lr is None and "lr" in probe_training:
        training = training.model_copy(update={"shadow_lr": float(probe_training["lr"])})
    mismatched = {
        name: (getattr(training, ours), probe_training[theirs])
        for ours, theirs, name in (("batch_size", "batch_size", "batch"), ("local_steps", "steps", "T"))
        if theirs in probe_training and getattr(training, ours) != probe_training[theirs]
    }
    if needs_shadow and mismatched:
        log.warning(
            "probe %s was trained at %s; clients train at %s: shadow scores may drift from its calibration",
            manifest.probe_id,
            {k: v[1] for k, v in mismatched.items()},
            {k: v[0] for k, v in mismatched.items()},
        )
    return defense, training
