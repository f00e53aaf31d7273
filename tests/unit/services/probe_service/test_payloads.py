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
    _, from_json = to_features(bank, input_from_json({"snapshots": [row]}, selector))
    zero = save({k: np.zeros_like(v) for k, v in state.items()})
    _, against_zero = to_features(bank, ScoreInput(selector, adapters=[save(state)], reference=zero))
    np.testing.assert_array_equal(from_adapter, from_json)
    np.testing.assert_array_equal(from_adapter, against_zero)
    with pytest.raises(InvalidUpdate, match=r"adapter 1: .*lacks"):
        to_features(bank, ScoreInput(selector, adapters=[save(state), save({"x": np.zeros(2, np.float32)})]))
    with pytest.raises(InvalidUpdate, match="rectangular"):
        input_from_json({"snapshots": [[1.0], [1.0, 2.0]]}, selector)
