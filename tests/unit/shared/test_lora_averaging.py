"""FedAvg's math on adapter states: stacking checked against the reference, exact weighted means."""

import numpy as np
import pytest

from shared.lora_averaging import normalised_weights, stack_states, weighted_mean

KEY_A, KEY_B = "layers.0.q_proj.lora_A.weight", "layers.0.q_proj.lora_B.weight"


def _state(a: float, b: float) -> dict[str, np.ndarray]:
    return {KEY_A: np.full((1, 2), a, np.float32), KEY_B: np.full((2, 1), b, np.float32)}


def test_weighted_mean_uses_normalised_sample_weights() -> None:
    reference = _state(0, 0)
    stacked = stack_states([_state(1, 10), _state(4, 40)], reference)
    mean = weighted_mean(stacked, [1, 2])  # weights 1/3, 2/3, not 1/2 each
    np.testing.assert_array_equal(mean[KEY_A], np.full((1, 2), 3.0, np.float32))
    np.testing.assert_array_equal(mean[KEY_B], np.full((2, 1), 30.0, np.float32))
    assert mean[KEY_A].dtype == np.float32


def test_bad_weights_and_layouts_are_refused() -> None:
    np.testing.assert_array_equal(normalised_weights([1, 3]), [0.25, 0.75])
    for weights in ([0, 0], [-1, 2], [np.nan, 1]):
        with pytest.raises(ValueError):
            normalised_weights(weights)
    with pytest.raises(ValueError):
        stack_states([], _state(0, 0))
    with pytest.raises(ValueError):
        stack_states([{KEY_A: np.zeros((1, 2), np.float32)}], _state(0, 0))
