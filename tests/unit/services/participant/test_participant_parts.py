"""The participant's pure parts: its data files, credentials file, retry policy, round state, settings."""

from __future__ import annotations

import json
import random
import threading

import httpx
import pytest

from services.participant.api_client import AggregatorClient, Refused, Stopped
from services.participant.credentials import Credentials, CredentialsError, load_credentials, save_credentials
from services.participant.data import DataError, load_rows
from services.participant.retry import retry_delay
from services.participant.round_state import PendingUpdate, RoundState
from services.participant.settings import ParticipantSettings

SECRET = "do-not-print-this-row"


def test_rows_from_jsonl_json_and_a_directory(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        '{"instruction": "q1", "response": "a1"}\n\n{"instruction": "q2", "output": "a2", "input": "ctx"}\n'
    )
    (tmp_path / "b.json").write_text(json.dumps([{"instruction": "q3", "response": "a3"}]))
    (tmp_path / "notes.txt").write_text("ignored")
    assert load_rows(tmp_path / "a.jsonl") == [("q1", "a1"), ("q2\n\nctx", "a2")]
    assert load_rows(tmp_path) == [("q1", "a1"), ("q2\n\nctx", "a2"), ("q3", "a3")]


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        (f'{{"instruction": "{SECRET}"}}\n', ".jsonl", "rows.jsonl:1: 'response' must be a non-empty string"),
        (f'{{"instruction": "{SECRET}", "response": ""}}\n', ".jsonl", "'response' must be a non-empty"),
        (f'["{SECRET}"]', ".json", r"rows.json\[0\]: a row must be an object"),
        ('{"rows": []}', ".json", "a JSON file must hold a list of rows"),
        (f'ok\n{{"instruction": "{SECRET}"', ".jsonl", "rows.jsonl:1: not JSON"),
        ("", ".jsonl", "no rows"),
    ],
)
def test_bad_rows_are_named_by_position_never_by_content(tmp_path, content, suffix, message):
    path = tmp_path / f"rows{suffix}"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as raised:
        load_rows(path)
    assert SECRET not in str(raised.value)


def test_credentials_are_written_0600_and_refused_when_others_can_read_them(tmp_path):
    path = tmp_path / "state" / "credentials.json"
    assert load_credentials(path) is None
    credentials = Credentials("https://agg", "c1", "secret-token")
    save_credentials(path, credentials)
    assert path.stat().st_mode & 0o777 == 0o600 and load_credentials(path) == credentials
    path.chmod(0o644)
    with pytest.raises(CredentialsError, match="readable by others \\(mode 0o644\\): chmod 600 it"):
        load_credentials(path)
    path.chmod(0o600)
    path.write_text("{}")
    with pytest.raises(CredentialsError, match="not a credentials file: KeyError"):
        load_credentials(path)


def test_retry_after_wins_else_capped_exponential_backoff_with_jitter():
    assert retry_delay(5, "3") == 3.0
    assert retry_delay(0, "600", cap_s=60) == 60.0
    low, high = random.Random(0), random.Random(0)
    low.random = lambda: 0.0  # type: ignore[method-assign]
    high.random = lambda: 0.999999  # type: ignore[method-assign]
    assert retry_delay(3, None, base_s=0.5, rng=low) == 2.0  # half of 0.5 * 2^3
    assert retry_delay(3, "Wed, 21 Oct 2015 07:28:00 GMT", base_s=0.5, rng=high) == pytest.approx(
        4.0, abs=1e-5
    )
    assert retry_delay(20, None, base_s=0.5, cap_s=60, rng=high) == pytest.approx(60.0, abs=1e-4)


def _client(handler, stop: threading.Event | None = None) -> AggregatorClient:  # type: ignore[no-untyped-def]
    settings = ParticipantSettings(
        server="http://agg", client_id="c1", insecure_http=True, max_backoff_s=0.01
    )
    client = AggregatorClient(settings, stop or threading.Event())
    client.http = httpx.Client(base_url="http://agg", transport=httpx.MockTransport(handler))
    return client


def test_the_client_retries_503_429_and_network_errors_then_reports_refusals():
    calls: list[str] = []
    answers = [
        httpx.Response(503, headers={"retry-after": "0"}, json={"detail": "store down"}),
        "network",
        httpx.Response(429, headers={"retry-after": "0"}, json={"detail": "slow down"}),
        httpx.Response(200, json={"token": "t"}),
        httpx.Response(409, json={"detail": "client id 'c1' is already registered"}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        answer = answers.pop(0)
        if answer == "network":
            raise httpx.ConnectError("connection refused")
        return answer  # type: ignore[return-value]

    client = _client(handler)
    assert client.register("c1", "enrol") == "t" and len(calls) == 4
    with pytest.raises(Refused, match="enrol: HTTP 409: client id 'c1' is already registered") as refused:
        client.register("c1", "enrol")
    assert refused.value.status == 409


def test_a_stop_ends_the_retries():
    stop = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        stop.set()  # SIGTERM arrives while the server is down
        return httpx.Response(503, headers={"retry-after": "30"})

    with pytest.raises(Stopped):
        _client(handler, stop).task()


def test_plain_http_needs_the_explicit_flag():
    with pytest.raises(ValueError, match="plain http: the token and the adapter would travel unencrypted"):
        ParticipantSettings(server="http://agg", client_id="c1")
    assert ParticipantSettings(server="https://agg", client_id="c1").server == "https://agg"


def test_a_saved_update_survives_a_restart_byte_for_byte_until_marked_done(tmp_path):
    state = RoundState(tmp_path)
    pending = PendingUpdate(2, 2, 6, 2, 1.25, b"adapter-bytes", b"snapshot-bytes")
    state.save(pending)
    assert RoundState(tmp_path).load(2, 2) == pending
    assert RoundState(tmp_path).load(2, 1) is None  # trained from another global: train again
    assert RoundState(tmp_path).load(3, 2) is None
    state.mark_done(2, "accepted")
    assert state.load(2, 2) is None and RoundState(tmp_path).done() == {"2": "accepted"}
