"""What a defense level reads about an update: one name per kind of score, stored and configured as its value.

The values are the strings the store's JSON, the settings and the results files have always used, so a
StrEnum member equals (and hashes as) its old string: `Inputs.STEPS == "steps"`.
"""

from __future__ import annotations

from enum import StrEnum


class Inputs(StrEnum):
    STEPS = "steps"  # reported local-step snapshots of layer-0 B, against the round's global
    SHADOW = "shadow"  # reported shadow-branch snapshots, against the fixed init
    VERIFIED = "verified"  # the submitted adapter minus the round's global, computed by the server
    AUDIT = "audit"  # the behavioural audit's Δ harm preference of the update (no probe)
