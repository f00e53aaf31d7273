import json

import numpy as np
import pytest
from safetensors.numpy import save

from services.probe_service.errors import InvalidUpdate
from services.probe_service.payloads import (
    ScoreInput,
    input_from_json,
    input_from_safetensors,
    selector_from_adapter_config,
    selector_from_params,
    to_features,
)
from services.probe_service.scoring import ProbeBank, ProbeSelector


def test_selector_reads_params_and_fills_the_rest_from_the_peft_config():
    params = selector_from_params({"r": "2", "target_modules": "q_proj, v_proj", "probe_id": ""})
    assert params == ProbeSelector(lora_r=2, target_modules=("q_proj", "v_proj"))
    config = json.dumps(
        {"peft_type": "LORA", "r": 4, "target_modules": ["v_proj"], "base_model_name_or_path": "m"}
    )
    merged = selector_from_adapter_config(config.encode(), params)
    assert (merged.base_model, merged.lora_r, merged.target_modules) == ("m", 2, ("q_proj", "v_proj"))
    with pytest.raises(InvalidUpdate, match="not an integer"):
        selector_from_params({"r": "eight"})
    with pytest.raises(InvalidUpdate, match="peft_type 'IA3'"):
        selector_from_adapter_config(b'{"peft_type": "IA3"}', params)


def test_safetensors_body_is_snapshots_when_it_says_so_else_an_adapter(planted):
    selector = ProbeSelector(probe_id="toy-probe")
    snap = input_from_safetensors(save({"snapshots": np.ones((3, planted.spec.dim), np.float32)}), selector)
    assert snap.count == 3 and not snap.adapters
    blob = save(planted.adapter(True))
    assert input_from_safetensors(blob, selector).adapters == [blob]
    with pytest.raises(InvalidUpdate, match="not a valid safetensors"):
        input_from_safetensors(b"\x00" * 20, selector)


def test_all_forms_build_the_same_features(planted):
    bank = ProbeBank(planted.root)
    state = planted.adapter(True)
    selector = ProbeSelector(base_model="toy-model")
    _, from_adapter = to_features(bank, ScoreInput(selector, adapters=[save(state)]))
    row = from_adapter[0].tolist()
    _, from_json = to_features(bank, input_from_json(json.dumps({"snapshots": [row]}).encode(), selector))
    zero = save({k: np.zeros_like(v) for k, v in state.items()})
    _, against_zero = to_features(bank, ScoreInput(selector, adapters=[save(state)], reference=zero))
    np.testing.assert_array_equal(from_adapter, from_json)
    np.testing.assert_array_equal(from_adapter, against_zero)
    with pytest.raises(InvalidUpdate, match=r"adapter 1: adapter has no per-layer lora_B"):
        to_features(bank, ScoreInput(selector, adapters=[save(state), save({"x": np.zeros(2, np.float32)})]))
    with pytest.raises(InvalidUpdate, match="rectangular"):
        input_from_json(b'{"snapshots": [[1.0], [1.0, 2.0]]}', selector)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"snapshots": [[1.0]], "probe_id": ["toy-probe"]}', "probe_id must be a string"),
        (b'{"snapshots": [[1.0]], "base_model": 7}', "base_model must be a string"),
        (b'{"snapshots": [["1.0"]]}', "rectangular list of numbers"),
        (b'{"snapshots": [[true]]}', "rectangular list of numbers"),
        (b'{"snapshots": {"a": 1}}', "list of rows"),
        (b'{"snapshots": [[[[1.0]]]]}', "nested 5 levels"),
        (b"[" * 100_000, "nested 100000 levels"),
        (b"[1]", "must be an object"),
    ],
    ids=["probe_id", "base_model", "strings", "booleans", "object", "depth", "deep", "list"],
)
def test_json_bodies_are_type_checked_and_depth_bounded(body, message):
    with pytest.raises(InvalidUpdate, match=message):
        input_from_json(body, ProbeSelector())


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (b'{"base_model_name_or_path": ["m"]}', "base_model_name_or_path must be a string"),
        (b'{"target_modules": [1, 2]}', "target_modules must be a list of strings"),
        (b'{"r": true}', "r=True is not a positive integer"),
        (b'{"r": 0}', "r=0 is not a positive integer"),
        (b'{"peft_type": {"a": 1}}', "expected 'LORA'"),
        (b'{"a": ' * 50_000 + b"1" + b"}" * 50_000, "nested 50000 levels"),
    ],
    ids=["base_model", "targets", "bool-r", "zero-r", "peft_type", "deep"],
)
def test_adapter_config_fields_are_type_checked(config, message):
    with pytest.raises(InvalidUpdate, match=message):
        selector_from_adapter_config(config, ProbeSelector())


def test_an_adapter_s_own_tensors_decide_its_rank_and_targets(planted):
    from tests.unit.services.probe_service.conftest import adapter_state

    bank = ProbeBank(planted.root)
    explicit = ProbeSelector(probe_id="toy-probe")
    wider = adapter_state()  # q and v, plus k and o: the probe's keys are all there
    for module in ("k_proj", "o_proj"):
        wider[f"base_model.model.model.layers.0.self_attn.{module}.lora_B.weight"] = np.zeros(
            (3, 2), np.float32
        )
    with pytest.raises(InvalidUpdate, match=r"\['k_proj', 'o_proj', 'q_proj', 'v_proj'\]; probe 'toy-probe'"):
        to_features(bank, ScoreInput(explicit, adapters=[save(wider)]))
    with pytest.raises(InvalidUpdate, match="says r=4 but the adapter's tensors have r=2"):
        to_features(bank, ScoreInput(ProbeSelector(probe_id="toy-probe", lora_r=4), adapters=[save(wider)]))
    manifest, rows = to_features(bank, ScoreInput(explicit, adapters=[save(planted.adapter(True))]))
    assert manifest.probe_id == "toy-probe" and rows.shape == (1, planted.spec.dim)
