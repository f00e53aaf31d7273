"""RayClientPool's bookkeeping without Ray: actors start on first use, clients train in waves of
`max_live_actors`, and the least recently used idle actor is stopped to make room."""

import pytest

from research.clients import actor as actor_module
from research.clients.actor import RayClientPool
from research.clients.population import ClientSpec
from shared.config import LocalTrainingConfig, LoraSettings


class Recorder:
    def __init__(self):
        self.started: list[str] = []
        self.killed: list[str] = []
        self.waves: list[list[str]] = []


class FakeMethod:
    def __init__(self, client, name, recorder):
        self.client, self.name, self.recorder = client, name, recorder

    def remote(self, *args):
        return (self.client, self.name)


class FakeHandle:
    def __init__(self, client, recorder):
        self.client = client
        self.train_round = FakeMethod(client, "main", recorder)
        self.train_shadow = FakeMethod(client, "shadow", recorder)


@pytest.fixture
def pool_factory(monkeypatch):
    recorder = Recorder()

    class FakeActor:
        @staticmethod
        def options(**_):
            class Starter:
                @staticmethod
                def remote(spec, *args):
                    recorder.started.append(spec.client_id)
                    return FakeHandle(spec.client_id, recorder)

            return Starter

    def fake_get(futures):
        recorder.waves.append([client for client, _ in futures])
        return [f"{name}:{client}" for client, name in futures]

    monkeypatch.setattr(actor_module, "ClientActor", FakeActor)
    monkeypatch.setattr(actor_module.ray, "put", lambda value: value)
    monkeypatch.setattr(actor_module.ray, "get", fake_get)
    monkeypatch.setattr(actor_module.ray, "kill", lambda handle: recorder.killed.append(handle.client))
    specs = [ClientSpec(f"c{i}", "benign", (("q", "a"),)) for i in range(5)]

    def make(limit):
        pool = RayClientPool(specs, None, "m", LoraSettings(), LocalTrainingConfig(), max_live_actors=limit)
        return pool, recorder

    return make


def test_clients_train_in_waves_and_idle_actors_make_room(pool_factory):
    pool, rec = pool_factory(2)
    assert rec.started == []  # nothing starts before it is used
    out = pool.train_round(["c0", "c1", "c2"], {}, 0, 1e-3)
    assert out == ["main:c0", "main:c1", "main:c2"]  # in the order asked
    assert rec.waves == [["c0", "c1"], ["c2"]]
    assert rec.killed == ["c0"]  # least recently used, not in c2's wave
    assert list(pool.actors) == ["c1", "c2"]
    pool.train_round(["c1", "c3"], {}, 1, 1e-3)  # c1 is live: reused; c3 evicts c2, not c1
    assert rec.started == ["c0", "c1", "c2", "c3"] and rec.killed == ["c0", "c2"]
    assert pool.train_shadow(["c3", "c4"], 1) == {"c3": "shadow:c3", "c4": "shadow:c4"}
    assert len(pool.actors) == 2


def test_without_a_limit_every_sampled_client_trains_at_once(pool_factory):
    pool, rec = pool_factory(None)
    pool.train_round(["c0", "c1", "c2", "c3"], {}, 0, 1e-3)
    assert rec.waves == [["c0", "c1", "c2", "c3"]] and rec.killed == []
    with pytest.raises(KeyError, match="unknown clients"):
        pool.train_round(["c9"], {}, 0, 1e-3)
    with pytest.raises(ValueError, match="max_live_actors"):
        pool_factory(0)
