"""The participant loop: enrol once, then ask for the task, train when sampled, submit, wait.

I/O lives in the API client, the credential file, the round state and the local trainer; this module only
decides what to do next. It prints one line per round (never a data row) through `echo`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from services.participant.api_client import AggregatorClient, Refused, Stopped, Task
from services.participant.credentials import Credentials, load_credentials, save_credentials
from services.participant.local_training import LocalTrainer
from services.participant.round_state import PendingUpdate, RoundState
from services.participant.settings import ParticipantSettings
from shared.updates import encode_lora_state, encode_snapshots

ROUND_OVER = ("aggregated", "skipped")


class ParticipantError(Exception):
    """A stop the operator of this participant must act on; the message says what to do."""


def explain(error: Refused, client_id: str) -> str:
    """What a refusal means for whoever runs this participant."""
    hints = {
        401: "the server wants credentials it did not get: enrol with --enrollment-token",
        403: f"the server does not accept this participant as {client_id!r} (token revoked, spent or another "
        "client's): ask the operator for a new enrollment token and delete the credentials file",
        409: f"{client_id!r} is already registered: run from the state dir that holds its credentials, or "
        "enrol under another id",
    }
    hint = hints.get(error.status)
    return f"{error}" + (f"\n  -> {hint}" if hint else "")


class Participant:
    def __init__(
        self,
        settings: ParticipantSettings,
        rows: list[tuple[str, str]] | None = None,
        echo: Callable[[str], None] = print,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings, self.echo = settings, echo
        self.stop = stop or threading.Event()
        self.api = AggregatorClient(settings, self.stop)
        self.rounds = RoundState(settings.state_dir)
        self._rows = rows
        self._trainer: LocalTrainer | None = None
        self._seen: set[tuple[int, str]] = set()

    # enrolment
    def enrol(self) -> Credentials:
        """The stored credentials, or new ones from the enrollment token (kept 0600 in the state dir)."""
        path, settings = self.settings.credentials_path, self.settings
        stored = load_credentials(path)
        if stored is not None:
            if (stored.server, stored.client_id) != (settings.server, settings.client_id):
                raise ParticipantError(
                    f"{path} holds the credentials of {stored.client_id!r} at {stored.server}: "
                    "use another --state-dir for another federation or id"
                )
            self.api.authenticate(stored.client_id, stored.token)
            return stored
        try:
            token = self.api.register(settings.client_id, settings.enrollment_token)
        except Refused as error:
            raise ParticipantError(explain(error, settings.client_id)) from error
        credentials = Credentials(settings.server, settings.client_id, token)
        save_credentials(path, credentials)
        self.api.authenticate(credentials.client_id, credentials.token)
        self.echo(f"enrolled as {settings.client_id}; credentials in {path} (0600)")
        return credentials

    # the loop
    def run(self) -> int:
        """Until stopped (or `until_round` closed); returns how many rounds this participant submitted."""
        submitted = 0
        try:
            self.enrol()
            while not self.stop.is_set():
                task = self._task()
                if self._finished(task):
                    self.echo(f"round {self.settings.until_round} closed: done")
                    break
                if self._should_train(task) and self.play(task):
                    submitted += 1
                    continue  # ask again at once: the next round may already be open
                self.stop.wait(self.settings.poll_interval_s)
        except Stopped:
            pass
        finally:
            self.api.close()
        if self.stop.is_set():
            self.echo("stopped")
        return submitted

    def _task(self) -> Task:
        try:
            return self.api.task()
        except Refused as error:
            raise ParticipantError(explain(error, self.settings.client_id)) from error

    def _finished(self, task: Task) -> bool:
        last = self.settings.until_round
        if last is None or task.round_index is None:
            return False
        return task.round_index > last or (task.round_index == last and task.phase in ROUND_OVER)

    def _should_train(self, task: Task) -> bool:
        if task.round_index is None or task.phase != "open":
            return False
        if not task.sampled:
            self._once(task.round_index, "not sampled")
            return False
        return str(task.round_index) not in self.rounds.done()

    def _once(self, round_index: int, what: str) -> None:
        if (round_index, what) not in self._seen:
            self._seen.add((round_index, what))
            self.echo(f"round {round_index}: {what}")

    def play(self, task: Task) -> bool:
        """Train (or take the saved update), submit, record; True when the server accepted it."""
        assert task.round_index is not None and task.global_version is not None
        started = time.monotonic()
        pending = self.rounds.load(task.round_index, task.global_version)
        resumed = pending is not None
        if pending is None:
            pending = self._train(task)
            self.rounds.save(pending)
        try:
            accepted = self.api.submit(
                pending.round_index,
                pending.adapter,
                pending.snapshots,
                pending.num_samples,
                pending.batch_size,
                pending.train_loss,
            )
        except Refused as error:
            if error.status in (401, 403):
                raise ParticipantError(explain(error, self.settings.client_id)) from error
            # 409 (the round closed before the update arrived, or another update of ours is there) or 422:
            # this round is over for us; the next one starts from the next global.
            self.rounds.mark_done(task.round_index, f"refused {error.status}")
            self.echo(f"round {task.round_index}: update refused (HTTP {error.status}): {error.detail}")
            return False
        outcome = "duplicate" if accepted.duplicate else "accepted"
        self.rounds.mark_done(task.round_index, outcome)
        self.echo(
            f"round {task.round_index}: {outcome} {accepted.update_id[:12]}  global v{task.global_version}  "
            f"n={pending.num_samples}  loss={pending.train_loss:.3f}  "
            f"{'resumed' if resumed else f'{time.monotonic() - started:.1f}s'}"
        )
        return True

    def _train(self, task: Task) -> PendingUpdate:
        assert task.round_index is not None and task.global_version is not None
        if self._trainer is None:
            rows = self._rows
            if rows is None:
                from services.participant.data import load_rows

                if self.settings.data is None:
                    raise ParticipantError("no training data: pass --data FILE_OR_DIR")
                rows = load_rows(self.settings.data)
            self._trainer = LocalTrainer(
                self.settings.client_id,
                rows,
                self.settings.seed,
                self.stop,
                self.settings.torch_threads,
                self.settings.progress,
            )
        blob = self.api.global_adapter(task.global_version)
        update = self._trainer.train(task, blob)
        has_snapshots = update.b_snapshots.size > 0 or update.shadow_snapshots.size > 0
        return PendingUpdate(
            task.round_index,
            task.global_version,
            update.num_samples,
            update.batch_size,
            float(update.train_loss) if np.isfinite(update.train_loss) else float("nan"),
            encode_lora_state(update.lora_state),
            encode_snapshots(update) if has_snapshots else None,
        )
