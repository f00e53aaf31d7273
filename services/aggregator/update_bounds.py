"""The server decides what an update weighs: its task's subset size, batch size and local steps bound it.

A client reports n_i (FedAvg weight) and b (samples per flagged step); both are claims. The task states
T local steps of b samples, so n_i <= b * T; a claim above that (or another b) is refused, or clipped to
the task's values and noted for the decision log (`AggregatorSettings.oversized_updates`). Snapshot rows
must number exactly T: more would dilute the step evidence, fewer would hide steps.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from shared.config import LocalTrainingConfig
from shared.updates import ClientUpdate


class UpdateOutOfBounds(ValueError):
    """A submission outside what its task allows (422)."""


def max_num_samples(training: LocalTrainingConfig) -> int:
    """The round's subset size: T local steps of b samples."""
    return training.batch_size * training.local_steps


def bound_update(
    update: ClientUpdate, training: LocalTrainingConfig, policy: Literal["reject", "clip"]
) -> ClientUpdate:
    """The update as the server will weigh it; raises UpdateOutOfBounds when refused."""
    for name in ("b_snapshots", "shadow_snapshots"):
        rows = getattr(update, name).shape[0] if getattr(update, name).size else 0
        if rows and rows != training.local_steps:
            raise UpdateOutOfBounds(f"{name}: {rows} rows, the task has {training.local_steps} local steps")
    cap = max_num_samples(training)
    problems = []
    if update.num_samples > cap:
        problems.append(f"num_samples {update.num_samples} > the task's subset of {cap}")
    if update.batch_size not in (0, training.batch_size):  # 0: not stated (in-process clients)
        problems.append(f"batch_size {update.batch_size} != the task's {training.batch_size}")
    if not problems:
        return replace(update, batch_size=training.batch_size)
    if policy == "reject":
        raise UpdateOutOfBounds("; ".join(problems))
    return replace(
        update,
        num_samples=min(update.num_samples, cap),
        batch_size=training.batch_size,
        notes="clipped: " + "; ".join(problems),
    )
