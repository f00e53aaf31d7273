"""The server bounds how far one update may move the global adapter (pure: no I/O).

FedAvg has no bound on an update's norm: a client that submits global + k·Δ with honest sample counts moves
the global k times as far as an honest client would, and at k = clients per round replaces it outright. The
bound is on ‖Δ‖₂ (Δ = submitted adapter − the global issued for the round, every tensor, float64 norm):

- calibrated (`VerificationSettings.norm_bound`): a quantile of benign updates' norms × a margin
  (`calibrate_norm_bound`), for the task's budget (lr, b, T) — recalibrate when the task changes;
- uncalibrated fallback: `round_margin` × the median ‖Δ‖ of the round's updates. It holds only while honest
  clients are most of the round (a malicious majority moves the median), so deployments calibrate.

Over the bound an update is clipped to it (global + Δ · bound/‖Δ‖, the reason in the decision log) or, with a
calibrated bound, refused at submission (422).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from shared.lora_state import LoraState
from shared.updates import ClientUpdate


def delta_norm(adapter: Mapping[str, np.ndarray], issued: Mapping[str, np.ndarray]) -> float:
    """‖adapter − issued‖₂ over every tensor (float64, so a large update cannot overflow to inf)."""
    total = 0.0
    for key, reference in issued.items():
        delta = np.asarray(adapter[key], np.float64) - np.asarray(reference, np.float64)
        total += float(np.sum(delta * delta))
    return float(np.sqrt(total))


def calibrate_norm_bound(benign_norms: Sequence[float], quantile: float = 0.95, margin: float = 1.5) -> float:
    """A bound from benign update norms: their `quantile` (linear interpolation) × `margin`."""
    if not benign_norms:
        raise ValueError("calibration needs at least one benign update norm")
    if not 0 <= quantile <= 1 or margin <= 0:
        raise ValueError("quantile must be in [0, 1] and margin > 0")
    return float(np.quantile(np.asarray(benign_norms, np.float64), quantile) * margin)


def round_bound(norms: Sequence[float], calibrated: float | None, round_margin: float) -> float:
    """The bound in force this round: the calibrated one, else round_margin × the round's median norm."""
    if calibrated is not None:
        return calibrated
    return float(np.median(np.asarray(norms, np.float64))) * round_margin if norms else float("inf")


def clip_to_bound(adapter: LoraState, issued: LoraState, bound: float) -> tuple[LoraState, float]:
    """(issued + Δ · min(1, bound/‖Δ‖), ‖Δ‖): the adapter unchanged when it is within the bound."""
    norm = delta_norm(adapter, issued)
    if norm <= bound:
        return adapter, norm
    scale = np.float32(bound / norm)
    clipped = {
        k: (issued[k] + scale * (np.asarray(adapter[k], np.float32) - issued[k])).astype(np.float32)
        for k in issued
    }
    return clipped, norm


def bound_round(
    updates: Sequence[ClientUpdate], issued: LoraState, calibrated: float | None, round_margin: float
) -> list[ClientUpdate]:
    """The round's updates with every one over the bound clipped to it and a note saying so."""
    norms = [delta_norm(u.lora_state, issued) for u in updates]
    bound = round_bound(norms, calibrated, round_margin)
    out = []
    for update, norm in zip(updates, norms, strict=True):
        if norm <= bound:
            out.append(update)
            continue
        state, _ = clip_to_bound(update.lora_state, issued, bound)
        source = "calibrated" if calibrated is not None else f"{round_margin:g} x the round's median"
        note = f"norm bound: |delta| {norm:.4g} clipped to {bound:.4g} ({source})"
        out.append(replace(update, lora_state=state, notes="; ".join(n for n in (update.notes, note) if n)))
    return out
