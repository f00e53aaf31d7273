"""The participant's decisions against a scripted aggregator (httpx MockTransport): enrolment, refusals and
their messages, resuming a saved update, a late submission, the last round."""

from __future__ import annotations

import json

import httpx
import pytest

from services.participant.participant import Participant, ParticipantError
from services.participant.round_state import PendingUpdate, RoundState
from services.participant.settings import ParticipantSettings

TASK = {
    "model": "tiny-llama",
    "lora": {},
    "round_index": 0,
    "phase": "open",
    "sampled": True,
    "global_version": 0,
    "lr": 1e-3,
    "training": {},
}


def _participant(tmp_path, handler, **overrides) -> tuple[Participant, list[str]]:  # type: ignore[no-untyped-def]
    settings = ParticipantSettings(
        server="http://agg", client_id="c1", insecure_http=True, state_dir=tmp_path, poll_interval_s=0.01,
        enrollment_token="enrol-1", **overrides,
    )  # fmt: skip
    lines: list[str] = []
    participant = Participant(settings, rows=[("q", "a")], echo=lines.append)
    participant.api.http = httpx.Client(base_url="http://agg", transport=httpx.MockTransport(handler))
    return participant, lines


def test_an_id_already_taken_ends_enrolment_with_what_to_do(tmp_path):
    participant, _ = _participant(
        tmp_path, lambda r: httpx.Response(409, json={"detail": "client 'c1' is already registered"})
    )
    with pytest.raises(ParticipantError, match="enrol: HTTP 409: client 'c1' is already registered") as error:
        participant.run()
    assert "run from the state dir that holds its credentials" in str(error.value)
    assert not (tmp_path / "credentials.json").exists()


def test_a_revoked_token_ends_the_loop_with_its_reason(tmp_path):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/clients":
            return httpx.Response(201, json={"client_id": "c1", "token": "bearer-1"})
        assert request.headers["authorization"] == "Bearer bearer-1"
        return httpx.Response(403, json={"detail": "the token does not belong to client 'c1'"})

    participant, lines = _participant(tmp_path, handler)
    with pytest.raises(ParticipantError, match="task: HTTP 403: the token does not belong") as error:
        participant.run()
    assert "ask the operator for a new enrollment token" in str(error.value)
    assert lines == [f"enrolled as c1; credentials in {tmp_path / 'credentials.json'} (0600)"]
    assert (tmp_path / "credentials.json").stat().st_mode & 0o777 == 0o600


def test_a_saved_update_is_resubmitted_unchanged_and_a_late_one_is_logged_not_fatal(tmp_path):
    (tmp_path / "credentials.json").write_text(
        json.dumps({"server": "http://agg", "client_id": "c1", "token": "t"})
    )
    (tmp_path / "credentials.json").chmod(0o600)
    RoundState(tmp_path).save(PendingUpdate(0, 0, 4, 2, 1.5, b"adapter", b"snapshots"))
    RoundState(tmp_path).save(PendingUpdate(1, 1, 4, 2, 1.25, b"adapter-1", None))
    tasks = [
        TASK,
        {**TASK, "round_index": 1, "global_version": 1},
        {**TASK, "round_index": 1, "phase": "aggregated"},
    ]
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/task":
            return httpx.Response(200, json=tasks.pop(0) if len(tasks) > 1 else tasks[0])
        bodies.append(request.read())
        if request.url.path == "/v1/rounds/0/updates":
            return httpx.Response(202, json={"update_id": "abcdef0123456789", "duplicate": True})
        return httpx.Response(409, json={"detail": "round 1 closed (aggregated)"})

    participant, lines = _participant(tmp_path, handler, until_round=1)
    assert participant.run() == 1
    assert (
        b"adapter" in bodies[0] and b"snapshots" in bodies[0] and b'name="num_samples"\r\n\r\n4' in bodies[0]
    )
    assert b"snapshots" not in bodies[1]
    assert lines[0].startswith("round 0: duplicate abcdef012345  global v0  n=4  loss=1.500  resumed")
    assert lines[1:] == [
        "round 1: update refused (HTTP 409): round 1 closed (aggregated)",
        "round 1 closed: done",
    ]
    assert RoundState(tmp_path).done() == {"0": "duplicate", "1": "refused 409"}


def test_credentials_of_another_federation_are_not_used(tmp_path):
    (tmp_path / "credentials.json").write_text(
        json.dumps({"server": "http://other", "client_id": "c1", "token": "t"})
    )
    (tmp_path / "credentials.json").chmod(0o600)
    participant, _ = _participant(tmp_path, lambda r: httpx.Response(500))
    with pytest.raises(ParticipantError, match="holds the credentials of 'c1' at http://other"):
        participant.run()
