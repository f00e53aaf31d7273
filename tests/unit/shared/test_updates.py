import pickle

import numpy as np
import pytest

from shared.lora_state import LoraStateError
from shared.updates import ClientUpdate, decode_lora_state, encode_lora_state


def _state(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "m.layers.0.q_proj.lora_B.weight": rng.normal(size=(6, 2)).astype(np.float32),
        "m.layers.0.q_proj.lora_A.weight": rng.normal(size=(2, 6)).astype(np.float32),
    }


def test_round_trip_is_exact():
    state = _state()
    decoded = decode_lora_state(encode_lora_state(state))
    assert set(decoded) == set(state)
    for key in state:
        np.testing.assert_array_equal(decoded[key], state[key])


def test_encoding_is_deterministic_and_content_hash_tracks_content():
    assert encode_lora_state(_state()) == encode_lora_state(dict(reversed(list(_state().items()))))
    a = ClientUpdate("c1", 0, 16, _state(0))
    assert a.content_hash() == ClientUpdate("c1", 0, 16, _state(0)).content_hash()
    assert a.content_hash() != ClientUpdate("c1", 0, 16, _state(1)).content_hash()
    assert a.content_hash() != ClientUpdate("c2", 0, 16, _state(0)).content_hash()


@pytest.mark.parametrize(
    "payload",
    [b"", b"not safetensors at all", pickle.dumps({"x": np.zeros(3)}), encode_lora_state(_state())[:-7]],
    ids=["empty", "garbage", "pickle", "truncated"],
)
def test_anything_but_valid_safetensors_is_refused(payload):
    with pytest.raises(LoraStateError, match="safetensors"):
        decode_lora_state(payload)


def test_nan_and_integer_tensors_are_refused():
    bad = _state()
    bad["m.layers.0.q_proj.lora_B.weight"][0, 0] = np.nan
    with pytest.raises(LoraStateError, match="NaN"):
        decode_lora_state(encode_lora_state(bad))
    from safetensors.numpy import save

    with pytest.raises(LoraStateError, match="dtype"):
        decode_lora_state(save({"k": np.zeros(3, dtype=np.int32)}))
