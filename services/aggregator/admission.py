"""What the server checks before it stores a submitted update (blocking: the API runs it in a worker thread).

In order: the resource bounds (update_bounds.py), that the round is open and the client sampled in it, the
adapter's layout against the global's, the reported snapshots (present when the level reads them, every
one of the layer-0 B width and finite), and the evidence the server verifies itself (verification.py: the
last snapshot equals the adapter; structure and norm when set to refuse). A refused update is written to
the decision log before the 422, so an operator sees every refusal, not only every acceptance.
"""

from __future__ import annotations

import numpy as np

from services.aggregator.defenses import Defense
from services.aggregator.errors import InvalidSubmission, RefusedUpdate, RoundConflict
from services.aggregator.scoring import SNAPSHOTS_OF
from services.aggregator.settings import AggregatorSettings
from services.aggregator.state import DecisionRecord, RoundRecord, StateStore
from services.aggregator.update_bounds import UpdateOutOfBounds, bound_update
from services.aggregator.verification import (
    VerificationError,
    VerificationSettings,
    check_update,
    verify_last_snapshot,
)
from shared.features import FeatureSpec
from shared.lora_state import LoraState, LoraStateError, validate_lora_state
from shared.updates import ClientUpdate


class Admission:
    def __init__(
        self,
        store: StateStore,
        settings: AggregatorSettings,
        defense: Defense | None,
        layout: LoraState,
        verification: VerificationSettings,
        *,
        reads_snapshots: bool,
    ) -> None:
        """`layout`: the global adapter every update must match; `reads_snapshots`: a level with a probe
        (baselines never read the reported rows, so they are not checked against the adapter)."""
        self.store, self.settings, self.defense = store, settings, defense
        self.layout, self.verification, self.reads_snapshots = layout, verification, reads_snapshots
        # Reported snapshots are layer-0 B rows whatever the probe reads (a whole-update probe reads more).
        self.snapshot_spec = FeatureSpec.for_adapter(layout, "first_B")

    def admit(self, update: ClientUpdate) -> tuple[ClientUpdate, RoundRecord]:
        """The update as it will be stored (bounded) and its round; InvalidSubmission, RefusedUpdate or
        RoundConflict otherwise. The round's phase is the store's to check when it adds the update."""
        try:
            update = bound_update(update, self.settings.training, self.settings.oversized_updates)
        except UpdateOutOfBounds as error:
            raise InvalidSubmission(str(error)) from error
        record = self.store.get_round(update.round_index)
        if record is None:
            raise RoundConflict(f"round {update.round_index} is not open")
        # A retry of an accepted update is a duplicate (202) even once the round is closing; anything
        # else after the close began is a 409 (the store decides, atomically).
        if update.client_id not in record.sampled:
            raise RoundConflict(f"{update.client_id} is not sampled in round {update.round_index}")
        try:
            validate_lora_state(update.lora_state, self.layout)
        except LoraStateError as error:
            raise InvalidSubmission(str(error)) from error
        self._check_snapshots(update, record)
        self._verify(update, record)
        return update, record

    def _check_snapshots(self, update: ClientUpdate, record: RoundRecord) -> None:
        if self.defense is None or not self.reads_snapshots:
            return
        width = self.snapshot_spec.dim
        needed = SNAPSHOTS_OF.get(self.defense.inputs)  # None: the audit level reads no snapshots
        trust = self.store.get_trust().get(update.client_id, {})  # the server's view, not the client's
        if (
            needed
            and getattr(update, needed).size == 0
            and self.defense.needs_scores(record.round_index, trust)
        ):
            raise InvalidSubmission(f"the {self.defense.name} level needs {needed} [steps, {width}]")
        for name in SNAPSHOTS_OF.values():
            value = getattr(update, name)
            if value.size and (value.ndim != 2 or value.shape[1] != width):
                raise InvalidSubmission(f"{name}: shape {list(value.shape)}, expected [steps, {width}]")
            if value.size and not np.all(np.isfinite(value)):
                raise InvalidSubmission(f"{name}: contains NaN or Inf")

    def _verify(self, update: ClientUpdate, record: RoundRecord) -> None:
        try:
            if self.reads_snapshots:
                verify_last_snapshot(update, self.snapshot_spec)
            if "refuse" in (self.verification.structure, self.verification.over_bound):
                _, issued = self.store.get_global(record.global_version)
                check_update(update, issued, self.verification, self.settings.training.local_steps)
        except LoraStateError as error:
            raise InvalidSubmission(str(error)) from error
        except VerificationError as error:
            reason = f"refused ({error.check}): {error}"
            self.store.append_decisions(
                [DecisionRecord(record.round_index, update.client_id, "refused", 0.0, 0.0, None, reason)]
            )
            raise RefusedUpdate(error.check, str(error)) from error
