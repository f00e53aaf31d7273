import numpy as np
import pytest

from services.aggregator.state import (
    AuditRecord,
    InMemoryStateStore,
    RoundPhase,
    RoundRecord,
    StateStoreError,
)
from shared.updates import ClientUpdate

KEY = "layers.0.q_proj.lora_B.weight"


def _update(cid: str, value: float = 1.0, round_index: int = 0) -> ClientUpdate:
    return ClientUpdate(cid, round_index, 8, {KEY: np.full((2, 2), value, np.float32)})


@pytest.fixture
def store():
    s = InMemoryStateStore()
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
    store.close_round(
        0,
        RoundPhase.AGGREGATED,
        1,
        {KEY: np.ones((2, 2), np.float32)},
        [AuditRecord(0, "a", "aggregated", 1.0)],
    )
    with pytest.raises(StateStoreError, match="not open"):
        store.add_update(_update("b"))
    with pytest.raises(StateStoreError, match="not open"):
        store.close_round(0, RoundPhase.AGGREGATED, 2, {}, [])


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
