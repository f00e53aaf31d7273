"""Audit request parts -> jobs: the adapter's LoRA must be the held one; clear errors otherwise."""

import json

import numpy as np
import pytest

from services.audit_service.payloads import check_adapter_config, job_from_parts
from services.probe_service.errors import InvalidUpdate
from shared.config import LoraSettings
from shared.updates import encode_lora_state

HELD = LoraSettings()
CONFIG = {
    "peft_type": "LORA",
    "base_model_name_or_path": "tiny-llama",
    "r": 8,
    "lora_alpha": 16,
    "target_modules": ["v_proj", "q_proj"],
}
STATE = {"layers.0.q_proj.lora_A.weight": np.arange(6, dtype=np.float32).reshape(2, 3)}


def _config(**changes: object) -> bytes:
    return json.dumps({**CONFIG, **changes}).encode()


def test_a_matching_config_names_its_base_model_and_an_explicit_one_wins():
    assert check_adapter_config(_config(), None, HELD) == "tiny-llama"
    assert check_adapter_config(_config(), "smollm2-135m", HELD) == "smollm2-135m"
    assert (
        check_adapter_config(_config(r=None, lora_alpha=None, target_modules=None), None, HELD)
        == "tiny-llama"
    )


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"r": 4}, "r 4 (held: 8)"),
        ({"lora_alpha": 32}, "lora_alpha 32 (held: 16)"),
        ({"target_modules": ["q_proj"]}, "target_modules"),
        ({"use_dora": True}, "use_dora"),
        ({"rank_pattern": {"q_proj": 4}}, "rank_pattern"),
        ({"peft_type": "IA3"}, "peft_type"),
    ],
)
def test_a_config_that_changes_what_the_weights_mean_is_refused(changes, needle):
    with pytest.raises(InvalidUpdate) as error:
        check_adapter_config(_config(**changes), None, HELD)
    assert needle in error.value.message


def test_parts_become_a_job_with_the_only_held_model_by_default():
    blob = encode_lora_state(STATE)
    job = job_from_parts({"adapter": [blob]}, None, ["tiny-llama"], HELD)
    assert job.model == "tiny-llama" and job.reference is None
    np.testing.assert_array_equal(
        job.adapter["layers.0.q_proj.lora_A.weight"], STATE["layers.0.q_proj.lora_A.weight"]
    )
    job = job_from_parts(
        {"adapter": [blob], "reference": [blob], "config": [_config()]}, None, ["a", "tiny-llama"], HELD
    )
    assert job.model == "tiny-llama" and job.reference is not None


@pytest.mark.parametrize(
    ("files", "held", "needle"),
    [
        ({}, ["tiny-llama"], "exactly one 'adapter'"),
        ({"adapter": [b"x", b"y"]}, ["tiny-llama"], "exactly one 'adapter'"),
        ({"adapter": [b"x"], "config": [b"{}", b"{}"]}, ["tiny-llama"], "appears 2 times"),
        ({"adapter": [b"not safetensors"]}, ["tiny-llama"], "adapter: not a valid safetensors"),
        (
            {"adapter": ["STATE"], "reference": [b"junk"]},
            ["tiny-llama"],
            "reference: not a valid safetensors",
        ),
        ({"adapter": ["STATE"]}, ["a", "b"], "say which base model"),
    ],
)
def test_bad_parts_are_refused_with_the_part_named(files, held, needle):
    files = {
        k: [encode_lora_state(STATE) if v == "STATE" else v for v in values] for k, values in files.items()
    }
    with pytest.raises(InvalidUpdate) as error:
        job_from_parts(files, None, held, HELD)
    assert needle in error.value.message
