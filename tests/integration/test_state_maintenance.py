"""Dropping finished federations' namespaces on a real redis-server: only the named one goes."""

import numpy as np
import pytest

from services.aggregator.state import RedisStateStore
from services.aggregator.state.maintenance import drop_namespace, namespaces

pytestmark = pytest.mark.integration


def _store(client, namespace: str) -> RedisStateStore:
    store = RedisStateStore(client, namespace=namespace)
    store.put_global(0, {"layers.0.q_proj.lora_B.weight": np.zeros((4, 2), np.float32)})
    return store


def test_drop_one_namespace_keeps_the_others(redis_client):
    _store(redis_client, "sim-a")
    _store(redis_client, "sim-ab")  # shares a prefix with sim-a: must survive dropping sim-a
    live = _store(redis_client, "sfl")
    counts = namespaces(redis_client, "sim-")
    assert set(counts) == {"sim-a", "sim-ab"} and all(c > 0 for c in counts.values())
    assert drop_namespace(redis_client, "sim-a") == counts["sim-a"]
    assert set(namespaces(redis_client, "")) >= {"sim-ab", "sfl"}
    assert "sim-a" not in namespaces(redis_client, "sim-")
    assert live.get_global()[0] == 0


@pytest.mark.parametrize("bad", ["", "sim-*", "a:b", "x?"])
def test_patterns_are_not_namespaces(redis_client, bad):
    with pytest.raises(ValueError, match="not a namespace"):
        drop_namespace(redis_client, bad)
