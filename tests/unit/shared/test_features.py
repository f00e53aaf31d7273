import numpy as np
import pytest

from shared.features import FeatureSpec, normalise
from shared.lora_state import LoraStateError

PREFIX = "base_model.model.model.layers"


def _state(
    q_out: int = 6, v_out: int = 2, r: int = 3, layers: int = 2, seed: int = 0
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    state = {}
    for layer in range(layers):
        for module, out in (("v_proj", v_out), ("q_proj", q_out)):
            state[f"{PREFIX}.{layer}.self_attn.{module}.lora_B.weight"] = rng.normal(size=(out, r)).astype(
                np.float32
            )
            state[f"{PREFIX}.{layer}.self_attn.{module}.lora_A.weight"] = rng.normal(size=(r, 4)).astype(
                np.float32
            )
    return state


def test_first_b_is_layer_zero_b_sorted_row_major():
    state = _state()
    spec = FeatureSpec.for_adapter(state)
    assert spec.keys == (
        f"{PREFIX}.0.self_attn.q_proj.lora_B.weight",
        f"{PREFIX}.0.self_attn.v_proj.lora_B.weight",
    )
    assert spec.dim == (6 + 2) * 3
    expected = np.concatenate([state[spec.keys[0]].reshape(-1), state[spec.keys[1]].reshape(-1)])
    np.testing.assert_array_equal(spec.raw(state), expected)


def test_delta_against_a_reference():
    state, reference = _state(seed=1), _state(seed=2)
    spec = FeatureSpec.for_adapter(state)
    np.testing.assert_allclose(spec.raw(state, reference), spec.raw(state) - spec.raw(reference), rtol=1e-6)


def test_all_layers_policy_takes_a_and_b_of_every_layer():
    spec = FeatureSpec.for_adapter(_state(), policy="all_layers")
    assert len(spec.keys) == 8 and list(spec.keys) == sorted(spec.keys)


def test_l2_normalisation_floor_and_non_finite_values():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [np.inf, 1.0]], dtype=np.float32)
    out = normalise(x, "l2")
    np.testing.assert_allclose(out[0], [0.6, 0.8])
    np.testing.assert_array_equal(out[1], [0.0, 0.0])  # norm below 1e-12 counts as 1
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(normalise(np.array([[np.nan, -np.inf]]), "none"), [[0.0, -1e6]])


def test_mismatching_adapters_are_rejected_with_what_differs():
    spec = FeatureSpec.for_adapter(_state())
    with pytest.raises(LoraStateError, match="LoRA rank"):
        spec.raw(_state(r=4))
    with pytest.raises(LoraStateError, match="base model width"):
        spec.raw(_state(q_out=7))
    other_targets = {k.replace("q_proj", "k_proj"): v for k, v in _state().items()}
    with pytest.raises(LoraStateError, match="target modules or base model"):
        spec.raw(other_targets)
    with pytest.raises(LoraStateError, match="feature length"):
        spec.transform(np.zeros(5, np.float32))


def test_module_norms_are_log_norms_of_each_matrix_delta_in_key_order():
    state, reference = _state(seed=1), _state(seed=2)
    reference[f"{PREFIX}.1.self_attn.v_proj.lora_A.weight"] = state[
        f"{PREFIX}.1.self_attn.v_proj.lora_A.weight"
    ]
    spec = FeatureSpec.for_adapter(state, "module_norms", "none")
    assert spec.keys == tuple(sorted(state)) and spec.dim == 8  # one value per LoRA matrix, A and B
    expected = [np.log(max(np.linalg.norm(state[k] - reference[k]), 1e-12)) for k in spec.keys]
    np.testing.assert_allclose(spec.raw(state, reference), expected, rtol=1e-6)
    frozen = spec.keys.index(f"{PREFIX}.1.self_attn.v_proj.lora_A.weight")
    assert spec.raw(state, reference)[frozen] == np.float32(np.log(1e-12))  # a matrix that did not move


def test_module_norms_from_all_layers_deltas_equal_the_adapter_path():
    state, reference = _state(seed=3), _state(seed=4)
    full = FeatureSpec.for_adapter(state, "all_layers")
    norms = FeatureSpec.for_adapter(state, "module_norms")
    np.testing.assert_allclose(
        full.module_norms(full.raw(state, reference))[0], norms.raw(state, reference), rtol=1e-6
    )
    with pytest.raises(LoraStateError, match="all_layers"):
        norms.module_norms(norms.raw(state, reference))


def test_center_keeps_the_profile_and_drops_the_scale():
    state, reference = _state(seed=5), _state(seed=6)
    spec = FeatureSpec.for_adapter(state, "module_norms", "center")
    scaled = {k: reference[k] + 4.0 * (state[k] - reference[k]) for k in state}
    one, four = spec.transform(spec.raw(state, reference)), spec.transform(spec.raw(scaled, reference))
    np.testing.assert_allclose(one, four, atol=1e-5)  # log(4x) = log 4 + log x: the mean absorbs it
    assert abs(float(one.mean())) < 1e-6
    np.testing.assert_array_equal(normalise(np.asarray([[1.0, 3.0]]), "center"), [[-1.0, 1.0]])


def test_l2_normalises_first_then_maps_non_finite_values():
    # the method's order: [inf, 1] / inf = [nan, 0] -> [0, 0]; mapping inf -> 1e6 first would give [1, 1e-6]
    np.testing.assert_array_equal(normalise(np.array([[np.inf, 1.0]], np.float32), "l2"), [[0.0, 0.0]])
    # centre on the finite values' mean (2), then map: NaN -> 0
    np.testing.assert_array_equal(normalise(np.array([[np.nan, 1.0, 3.0]]), "center"), [[0.0, -1.0, 1.0]])


def test_l2_floor_is_1e_minus_12_of_the_norm():
    below = np.array([[3e-13, 4e-13]], np.float32)  # norm 5e-13 < 1e-12: divided by 1, unchanged
    np.testing.assert_array_equal(normalise(below, "l2"), below)
    above = np.array([[3e-12, 4e-12]], np.float32)  # norm 5e-12: a unit vector
    np.testing.assert_allclose(normalise(above, "l2"), [[0.6, 0.8]], rtol=1e-6)
