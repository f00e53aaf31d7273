import numpy as np
import pytest

from services.aggregator.strategies import FedAvg, make_strategy
from shared.lora_state import LoraStateError
from shared.updates import ClientUpdate

KEY = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"


def _update(cid: str, value: float, n: int) -> ClientUpdate:
    return ClientUpdate(cid, 0, n, {KEY: np.full((4, 2), value, np.float32)})


GLOBAL = {KEY: np.zeros((4, 2), np.float32)}


def test_fedavg_weights_by_samples():
    result = FedAvg().aggregate(GLOBAL, [_update("a", 1.0, 10), _update("b", 4.0, 30)])
    np.testing.assert_allclose(result.state[KEY], (1.0 * 10 + 4.0 * 30) / 40)
    assert result.client_weights == pytest.approx({"a": 0.25, "b": 0.75})
    assert not result.skipped


def test_security_factors_scale_the_weights():
    # A planted attacker (value 100) with factor 0 must not move the aggregate.
    result = FedAvg().aggregate(
        GLOBAL, [_update("good", 1.0, 10), _update("bad", 100.0, 10)], factors=[1.0, 0.0]
    )
    np.testing.assert_allclose(result.state[KEY], 1.0)
    assert result.client_weights["bad"] == 0.0


def test_all_zero_weights_skip_and_keep_the_global():
    result = FedAvg().aggregate(GLOBAL, [_update("a", 3.0, 10)], factors=[0.0])
    assert result.skipped
    np.testing.assert_array_equal(result.state[KEY], GLOBAL[KEY])


def test_mismatched_shapes_are_a_clear_error():
    bad = ClientUpdate("x", 0, 5, {KEY: np.zeros((3, 2), np.float32)})
    with pytest.raises(LoraStateError, match="shape"):
        FedAvg().aggregate(GLOBAL, [bad])


def test_factor_count_must_match():
    with pytest.raises(ValueError, match="factors"):
        FedAvg().aggregate(GLOBAL, [_update("a", 1.0, 1)], factors=[1.0, 1.0])


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(ValueError, match="fedavg"):
        make_strategy("nope")
