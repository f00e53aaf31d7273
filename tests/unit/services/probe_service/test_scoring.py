import numpy as np
import pytest

from services.probe_service.errors import InvalidUpdate, ProbeNotFound
from services.probe_service.scoring import ProbeBank, ProbeSelector, adapter_features, check_snapshots


def test_probe_is_found_by_id_or_by_base_model_and_lora_shape(planted):
    bank = ProbeBank(planted.root)
    assert bank.resolve(ProbeSelector(probe_id="toy-probe")).probe_id == "toy-probe"
    by_model = ProbeSelector(
        base_model="/some/cache/toy-model", lora_r=2, target_modules=("v_proj", "q_proj")
    )
    assert bank.resolve(by_model).probe_id == "toy-probe"
    with pytest.raises(ProbeNotFound, match="known probes: toy-probe"):
        bank.resolve(ProbeSelector(probe_id="nope"))
    with pytest.raises(ProbeNotFound, match="probe build --model <name or checkpoint directory> &&"):
        bank.resolve(ProbeSelector(base_model="llama-8b"))
    with pytest.raises(
        InvalidUpdate, match="trained on base model 'llama-8b'; probe 'toy-probe' was made for"
    ):
        bank.resolve(ProbeSelector(probe_id="toy-probe", base_model="/models/llama-8b"))
    with pytest.raises(ProbeNotFound, match="safe-fedllm probe build --model smollm2-135m &&"):
        bank.resolve(ProbeSelector(base_model="HuggingFaceTB/SmolLM2-135M-Instruct"))
    with pytest.raises(ProbeNotFound, match="r=16"):
        bank.resolve(ProbeSelector(base_model="toy-model", lora_r=16))
    with pytest.raises(InvalidUpdate, match="name the probe"):
        bank.resolve(ProbeSelector())


def test_scores_match_the_planted_logistic_model(planted):
    bank = ProbeBank(planted.root)
    rows = np.stack(
        [
            adapter_features(planted.spec, planted.adapter(m, seed=i))
            for i, m in enumerate([True, False, True])
        ]
    )
    scores = bank.score("toy-probe", rows)
    np.testing.assert_allclose(scores, planted.probability(rows), atol=1e-5)
    assert scores[0] > 0.99 and scores[1] < 0.01


def test_a_probe_exported_after_start_is_picked_up(planted, tmp_path):
    bank = ProbeBank(tmp_path / "empty")
    assert bank.manifests() == []
    bank.registry.root = planted.root
    assert bank.manifest("toy-probe").probe_id == "toy-probe"


def test_features_refuse_mismatching_adapters_and_non_finite_values(planted):
    from tests.unit.services.probe_service.conftest import adapter_state

    with pytest.raises(InvalidUpdate, match="LoRA rank"):
        adapter_features(planted.spec, adapter_state(r=4))
    bad = planted.adapter(True)
    bad[planted.spec.keys[1]][0, 1] = np.inf
    with pytest.raises(InvalidUpdate, match=r"adapter tensor .*v_proj.lora_B.weight: inf at index \[0, 1\]"):
        adapter_features(planted.spec, bad)
    reference = planted.adapter(False)
    reference[planted.spec.keys[0]][2, 0] = np.nan
    with pytest.raises(InvalidUpdate, match="reference tensor"):
        adapter_features(planted.spec, planted.adapter(True), reference)


def test_snapshots_are_checked_for_width_rank_and_values(planted):
    dim = planted.spec.dim
    assert check_snapshots(planted.spec, np.ones(dim), "p").shape == (1, dim)
    with pytest.raises(InvalidUpdate, match=rf"expects \[n, {dim}\]"):
        check_snapshots(planted.spec, np.ones((2, dim + 1)), "p")
    with pytest.raises(InvalidUpdate, match="expects"):
        check_snapshots(planted.spec, np.ones((2, 2, dim)), "p")
    with pytest.raises(InvalidUpdate, match="nan at index"):
        check_snapshots(planted.spec, np.full((2, dim), np.nan), "p")
    with pytest.raises(InvalidUpdate, match="dtype int64"):
        check_snapshots(planted.spec, np.ones((2, dim), dtype=np.int64), "p")


def test_hub_ids_and_zoo_names_name_the_same_base_model():
    from services.probe_service.scoring import ZOO_MODELS, canonical_model_name
    from shared.model_zoo import MODEL_NAMES

    assert ZOO_MODELS == MODEL_NAMES  # the probe service's copy of the zoo's names stays in step
    for name in (
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "huggingfacetb/smollm2-135m-instruct/",
        "smollm2-135m",
    ):
        assert canonical_model_name(name) == "smollm2-135m"
    assert canonical_model_name("/cache/tiny-llama") == "tiny-llama"
    assert canonical_model_name("meta-llama/Llama-3-8B") == "Llama-3-8B"
