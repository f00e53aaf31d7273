"""RayClientPool's bookkeeping without Ray: actors start on first use, clients train in waves of
`max_live_actors`, the least recently used idle actor is stopped to make room, and with a `HostReserve`
stopped actors wait for the next pool, which loads its clients into them instead of starting workers."""

import pytest

from research.clients import actor as actor_module
from research.clients.actor import HostReserve, RayClientPool
from research.clients.population import ClientSpec
from shared.config import LocalTrainingConfig, LoraSettings


class Recorder:
    def __init__(self):
        self.started = 0  # workers started
        self.hosted: list[tuple[int, str]] = []  # (worker, client loaded into it)
        self.released: list[int] = []
        self.killed: list[int] = []
        self.waves: list[list[str]] = []


class FakeHandle:
    """A worker: numbered in start order; remembers which client it hosts."""

    def __init__(self, number, recorder):
        self.number, self.recorder, self.client = number, recorder, None
        handle = self

        class Host:
            @staticmethod
            def remote(spec, *args):
                handle.client = spec.client_id
                recorder.hosted.append((number, spec.client_id))
                return ("load", spec.client_id)

        class Release:
            @staticmethod
            def remote():
                recorder.released.append(number)

        def method(name):
            class Method:
                @staticmethod
                def remote(*args):
                    return (name, handle.client)

            return Method

        self.host, self.release = Host, Release
        self.train_round, self.train_shadow = method("main"), method("shadow")


@pytest.fixture
def recorder(monkeypatch):
    recorder = Recorder()

    class FakeActor:
        @staticmethod
        def options(**_):
            class Starter:
                @staticmethod
                def remote(*args):
                    recorder.started += 1
                    return FakeHandle(recorder.started - 1, recorder)

            return Starter

    def fake_get(futures):
        loads = [client for kind, client in futures if kind == "load"]
        recorder.waves.append([client for kind, client in futures if kind != "load"])
        assert [kind for kind, _ in futures] == sorted((k for k, _ in futures), key=lambda k: k != "load")
        return [None] * len(loads) + [f"{kind}:{client}" for kind, client in futures if kind != "load"]

    monkeypatch.setattr(actor_module, "ClientActor", FakeActor)
    monkeypatch.setattr(actor_module.ray, "put", lambda value: value)
    monkeypatch.setattr(actor_module.ray, "get", fake_get)
    monkeypatch.setattr(actor_module.ray, "kill", lambda handle: recorder.killed.append(handle.number))
    return recorder


SPECS = [ClientSpec(f"c{i}", "benign", (("q", "a"),)) for i in range(5)]


def make_pool(limit, reserve=None, base="base"):
    return RayClientPool(
        SPECS, base, "m", LoraSettings(), LocalTrainingConfig(), max_live_actors=limit, reserve=reserve
    )


def test_clients_train_in_waves_and_idle_actors_make_room(recorder):
    pool = make_pool(2)
    assert recorder.started == 0  # nothing starts before it is used
    out = pool.train_round(["c0", "c1", "c2"], {}, 0, 1e-3)
    assert out == ["main:c0", "main:c1", "main:c2"]  # in the order asked
    assert recorder.waves == [["c0", "c1"], ["c2"]]
    assert recorder.killed == [0]  # c0's, least recently used, not in c2's wave
    assert list(pool.actors) == ["c1", "c2"]
    pool.train_round(["c1", "c3"], {}, 1, 1e-3)  # c1 is live: reused; c3 evicts c2, not c1
    assert recorder.hosted == [(0, "c0"), (1, "c1"), (2, "c2"), (3, "c3")] and recorder.killed == [0, 2]
    assert pool.train_shadow(["c3", "c4"], 1) == {"c3": "shadow:c3", "c4": "shadow:c4"}
    assert len(pool.actors) == 2


def test_without_a_limit_every_sampled_client_trains_at_once(recorder):
    pool = make_pool(None)
    pool.train_round(["c0", "c1", "c2", "c3"], {}, 0, 1e-3)
    assert recorder.waves == [["c0", "c1", "c2", "c3"]] and recorder.killed == []
    with pytest.raises(KeyError, match="unknown clients"):
        pool.train_round(["c9"], {}, 0, 1e-3)
    with pytest.raises(ValueError, match="max_live_actors"):
        make_pool(0)


def test_a_reserve_hands_stopped_workers_to_the_next_pool_of_the_same_base(recorder):
    reserve = HostReserve()
    with make_pool(2, reserve) as first:
        first.train_round(["c0", "c1", "c2"], {}, 0, 1e-3)  # c2 evicts c0: worker 0 goes to the reserve...
        assert recorder.killed == [] and recorder.released == [0]
        assert recorder.hosted == [(0, "c0"), (1, "c1"), (0, "c2")]  # ...and c2 is loaded into it
    assert recorder.started == 2 and sorted(recorder.released) == [0, 0, 1]  # both back, none stopped
    with make_pool(None, reserve) as second:
        assert second.train_round(["c3", "c4", "c0"], {}, 0, 1e-3) == ["main:c3", "main:c4", "main:c0"]
    assert recorder.started == 3  # two reused, one started for the third client
    with make_pool(None, reserve, base="another base") as other:  # another base needs its own workers
        other.train_round(["c1"], {}, 0, 1e-3)
    assert recorder.started == 4
    reserve.close()
    assert sorted(recorder.killed) == [0, 1, 2, 3]
    assert reserve.take(("base", "m", "cpu", 0.1, 0.0)) is None


def test_a_full_reserve_stops_its_longest_idle_worker_whatever_its_base(recorder):
    reserve = HostReserve(capacity=2)
    with make_pool(None, reserve) as first:
        first.train_round(["c0", "c1"], {}, 0, 1e-3)  # workers 0, 1
    with make_pool(None, reserve, base="another base") as other:
        other.train_round(["c2"], {}, 0, 1e-3)  # worker 2 (no fit in the reserve)
    assert recorder.killed == [0] and len(reserve) == 2  # 0 idled first; without a cap all three stay
    with make_pool(None, reserve) as again:
        again.train_round(["c3", "c4"], {}, 0, 1e-3)
    assert [n for n, c in recorder.hosted if c in ("c3", "c4")] == [1, 3]  # the one kept, and a new one
    with pytest.raises(ValueError, match="capacity"):
        HostReserve(capacity=-1)
