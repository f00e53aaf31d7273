"""CachedClientPool: each distinct (client, round, lr, global adapter) is trained once; the shadow branch
once per (client, round); what comes back equals what the pool trained."""

import numpy as np
import pytest

from research.clients.population import ClientSpec
from research.clients.update_cache import CachedClientPool
from shared.updates import ClientUpdate

KEY = "base_model.model.layers.0.self_attn.q_proj.lora_B.default.weight"


class CountingPool:
    """Deterministic stand-in for the Ray pool: the update is a function of its inputs; calls are counted."""

    def __init__(self, ids):
        self.ids = list(ids)
        self.main_calls: list[tuple[str, int, bool]] = []
        self.shadow_calls: list[tuple[str, int]] = []

    @property
    def client_ids(self):
        return self.ids

    @staticmethod
    def shadow_of(client, round_index):
        return np.full((2, 3), 100 * round_index + int(client[-1]), np.float32)

    def train_round(self, client_ids, global_state, round_index, lr, shadow=None):
        out = []
        for c in client_ids:
            wants = (shadow or {}).get(c, True)
            self.main_calls.append((c, round_index, wants))
            state = {KEY: global_state[KEY] + np.float32(lr) * (1 + int(c[-1]))}
            out.append(
                ClientUpdate(
                    c,
                    round_index,
                    8,
                    state,
                    b_keys=[KEY],
                    b_snapshots=np.stack([state[KEY].ravel()] * 2),
                    train_loss=0.5 + round_index,
                    shadow_snapshots=self.shadow_of(c, round_index)
                    if wants
                    else np.zeros((0, 0), np.float32),
                    batch_size=4,
                )
            )
        return out

    def train_shadow(self, client_ids, round_index):
        self.shadow_calls += [(c, round_index) for c in client_ids]
        return {c: self.shadow_of(c, round_index) for c in client_ids}

    def shutdown(self):
        pass


SPECS = [ClientSpec(f"client-00{i}", "benign", (("q", f"a{i}"),)) for i in range(3)]
CONTEXT = {"model": "m", "seed": 1}
G0 = {KEY: np.zeros((2, 2), np.float32)}
G1 = {KEY: np.ones((2, 2), np.float32)}


def cached(tmp_path, pool, shadow_lr=1e-3, context=CONTEXT, specs=SPECS):
    return CachedClientPool(pool, specs, tmp_path, context, shadow_lr)


def assert_same(a: ClientUpdate, b: ClientUpdate):
    assert (a.client_id, a.round_index, a.num_samples, a.b_keys, a.train_loss, a.batch_size) == (
        b.client_id,
        b.round_index,
        b.num_samples,
        b.b_keys,
        b.train_loss,
        b.batch_size,
    )
    np.testing.assert_array_equal(a.lora_state[KEY], b.lora_state[KEY])
    np.testing.assert_array_equal(a.b_snapshots, b.b_snapshots)
    np.testing.assert_array_equal(a.shadow_snapshots, b.shadow_snapshots)


def test_same_inputs_are_trained_once_and_read_back_equal(tmp_path):
    pool = CountingPool([s.client_id for s in SPECS])
    first = cached(tmp_path, pool).train_round(["client-000", "client-001"], G0, 0, 1e-3)
    again_pool = cached(tmp_path, pool)  # a new federation (another defense) over the same directory
    again = again_pool.train_round(["client-001", "client-000"], G0, 0, 1e-3)
    assert len(pool.main_calls) == 2 and pool.shadow_calls == []
    assert_same(again[0], first[1])
    assert_same(again[1], first[0])
    assert again_pool.counts.reused == 2 and again_pool.counts.trained == 0
    assert again_pool.counts.shadow_reused == 2


@pytest.mark.parametrize(
    "change",
    [
        {"global_state": G1},
        {"round_index": 1},
        {"lr": 2e-3},
    ],
)
def test_another_adapter_round_or_lr_is_trained_again(tmp_path, change):
    pool = CountingPool(["client-000"])
    call = {"client_ids": ["client-000"], "global_state": G0, "round_index": 0, "lr": 1e-3}
    cached(tmp_path, pool).train_round(**call)
    cached(tmp_path, pool).train_round(**{**call, **change})
    assert len(pool.main_calls) == 2


def test_another_context_or_client_data_is_not_confused(tmp_path):
    pool = CountingPool(["client-000"])
    cached(tmp_path, pool).train_round(["client-000"], G0, 0, 1e-3)
    cached(tmp_path, pool, context={**CONTEXT, "seed": 2}).train_round(["client-000"], G0, 0, 1e-3)
    poisoned = [ClientSpec("client-000", "malicious", (("q", "a0"),))]
    cached(tmp_path, pool, specs=poisoned).train_round(["client-000"], G0, 0, 1e-3)
    assert len(pool.main_calls) == 3


def test_shadow_branch_is_shared_across_global_adapters_and_trained_alone_when_main_is_cached(tmp_path):
    pool = CountingPool(["client-000", "client-001"])
    # a defense without the shadow branch fills the main entries only
    plain = cached(tmp_path, pool, shadow_lr=None).train_round(["client-000", "client-001"], G0, 0, 1e-3)
    assert all(u.shadow_snapshots.size == 0 for u in plain)
    assert pool.main_calls == [("client-000", 0, False), ("client-001", 0, False)]
    # the shadow level reuses them and trains only the shadow branch
    shadowed = cached(tmp_path, pool).train_round(["client-000", "client-001"], G0, 0, 1e-3)
    assert len(pool.main_calls) == 2 and pool.shadow_calls == [("client-000", 0), ("client-001", 0)]
    np.testing.assert_array_equal(shadowed[1].shadow_snapshots, CountingPool.shadow_of("client-001", 0))
    # from another adapter, the main branch trains again but the shadow branch is read back
    other = cached(tmp_path, pool)
    other.train_round(["client-000"], G1, 0, 1e-3)
    assert pool.main_calls[-1] == ("client-000", 0, False)
    assert len(pool.shadow_calls) == 2 and other.counts.shadow_reused == 1


def test_a_client_told_to_skip_the_shadow_branch_gets_none(tmp_path):
    pool = CountingPool(["client-000", "client-001"])
    out = cached(tmp_path, pool).train_round(
        ["client-000", "client-001"], G0, 0, 1e-3, {"client-000": False, "client-001": True}
    )
    assert out[0].shadow_snapshots.size == 0 and out[1].shadow_snapshots.shape == (2, 3)
    assert pool.main_calls == [("client-000", 0, False), ("client-001", 0, True)]


def test_a_broken_entry_is_trained_again(tmp_path):
    pool = CountingPool(["client-000"])
    cached(tmp_path, pool).train_round(["client-000"], G0, 0, 1e-3)
    for entry in tmp_path.glob("main-*.npz"):
        entry.write_bytes(entry.read_bytes()[:40])  # truncated
    again = cached(tmp_path, pool).train_round(["client-000"], G0, 0, 1e-3)
    assert len(pool.main_calls) == 2
    np.testing.assert_array_equal(again[0].lora_state[KEY], G0[KEY] + np.float32(1e-3))


def test_the_same_shard_under_another_id_is_the_same_training(tmp_path):
    pool = CountingPool(["client-000", "client-007"])
    cached(tmp_path, pool).train_round(["client-000"], G0, 0, 1e-3)
    renamed = [ClientSpec("client-007", "benign", (("q", "a0"),))]  # client-000's shard at another ratio
    out = cached(tmp_path, pool, specs=renamed).train_round(["client-007"], G0, 0, 1e-3)
    assert len(pool.main_calls) == 1 and out[0].client_id == "client-007"


def test_shadow_alone_is_read_back_or_trained_once(tmp_path):
    pool = CountingPool(["client-000", "client-001"])
    first = cached(tmp_path, pool).train_shadow(["client-000"], 2)
    again = cached(tmp_path, pool)
    both = again.train_shadow(["client-000", "client-001"], 2)
    assert pool.shadow_calls == [("client-000", 2), ("client-001", 2)]
    np.testing.assert_array_equal(both["client-000"], first["client-000"])
    assert (again.counts.shadow_reused, again.counts.shadow_trained) == (1, 1)
