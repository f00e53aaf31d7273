"""What a probe's manifest tells the defense that uses it.

- its calibrated threshold and the first local step whose score is evidence (`min_step`), unless the
  operator set them explicitly;
- the shadow branch's lr: shadow steps are only in the probe's distribution when they are trained like the
  probe's trajectories (fixed lr, batch, T from θ^0), so the task tells clients the probe's lr. A client
  batch or T that differs from the probe's is allowed but logged: scores then drift from calibration.
"""

from __future__ import annotations

import logging

from probes.manifest import ProbeManifest
from services.aggregator.defenses import DefenseSettings
from shared.config import LocalTrainingConfig

log = logging.getLogger(__name__)


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
