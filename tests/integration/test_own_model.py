"""Bring your own model: random Qwen2 and Mistral checkpoints (a few layers, the SmolLM2 tokenizer) saved
with save_pretrained to a temp dir go through the whole path — loaded by directory and by registered name,
shared with client actors, a client round, a probe built and exported for them, the probe service scoring
their PEFT adapter directory and refusing a tiny-llama adapter, the aggregator's layout refusing it."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS
from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from research.clients.population import build_population
from research.clients.trainer import ClientTrainer
from shared.config import LocalTrainingConfig, LoraSettings, runtime_settings
from shared.lora import attach_lora, get_lora_state, set_lora_state
from shared.lora_state import LoraStateError, validate_lora_state
from shared.model_zoo import load_base_model, load_tokenizer, model_key
from shared.model_zoo.checkpoint import FAMILIES, CheckpointError
from shared.model_zoo.sharing import export_frozen_base, materialize_frozen_base

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TRAINING = LocalTrainingConfig(local_steps=2, batch_size=2, max_seq_len=48)
# Widths unlike tiny-llama's 64 x 2 layers, so a tiny-llama adapter cannot fit by accident.
SHAPES = {"hidden_size": 96, "intermediate_size": 160, "num_hidden_layers": 3, "num_attention_heads": 4,
          "num_key_value_heads": 2, "max_position_embeddings": 256}  # fmt: skip
BUILDERS = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "mistral": (MistralConfig, MistralForCausalLM)}


def save_random_checkpoint(family: str, directory: Path, seed: int = 0) -> Path:
    tokenizer = load_tokenizer("tiny-llama")
    config_cls, model_cls = BUILDERS[family]
    config = config_cls(
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **SHAPES,
    )
    torch.manual_seed(seed)
    model_cls(config).save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module", params=["qwen2", "mistral"])
def checkpoint(request, tmp_path_factory) -> Path:
    return save_random_checkpoint(request.param, tmp_path_factory.mktemp("models") / f"my-{request.param}")


def test_family_targets_are_pefts_defaults():
    for family, targets in FAMILIES.items():
        assert list(targets) == PEFT_TARGETS[family], family


def test_a_directory_loads_by_path_and_by_registered_name_with_one_fingerprint(
    checkpoint, monkeypatch, tmp_path
):
    loaded = load_base_model(str(checkpoint), compute_dtype="float32")
    assert loaded.name == model_key(str(checkpoint)) == checkpoint.name
    assert loaded.family == checkpoint.name.removeprefix("my-") and not loaded.aligned
    assert loaded.model.config._name_or_path == checkpoint.name  # what PEFT writes into adapter_config.json
    bf16 = load_base_model(str(checkpoint), compute_dtype="bfloat16")
    assert bf16.fingerprint == loaded.fingerprint  # taken before the cast
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    moved = shutil.copytree(checkpoint, tmp_path / "elsewhere")
    monkeypatch.setenv("SAFE_FEDLLM_MODELS", json.dumps({"ops-name": str(moved)}))
    runtime_settings.cache_clear()
    try:
        registered = load_base_model("ops-name", compute_dtype="float32")
    finally:
        monkeypatch.undo()
        runtime_settings.cache_clear()
    assert registered.name == "ops-name" and registered.fingerprint == loaded.fingerprint  # same weights
    other = save_random_checkpoint(loaded.family, tmp_path / "other", seed=1)
    assert load_base_model(str(other), compute_dtype="float32").fingerprint != loaded.fingerprint


def test_unsafe_or_unsupported_directories_are_refused(checkpoint, tmp_path):
    pickled = shutil.copytree(checkpoint, tmp_path / "pickled")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: pickle weights are never loaded"):
        load_base_model(str(pickled))
    foreign = shutil.copytree(checkpoint, tmp_path / "foreign")
    config = json.loads((foreign / "config.json").read_text())
    (foreign / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match="'gpt2' is not supported"):
        load_base_model(str(foreign))
    with pytest.raises(ValueError, match="not a known name"):
        load_base_model(str(tmp_path / "missing"))


@pytest.mark.precision
def test_the_shared_frozen_base_reproduces_the_logits(checkpoint):
    loaded = load_base_model(str(checkpoint))
    rebuilt = materialize_frozen_base(export_frozen_base(loaded.model, loaded.fingerprint))
    assert type(rebuilt) is type(loaded.model)
    ids = torch.randint(0, 1000, (2, 10))
    with torch.inference_mode():
        got, want = rebuilt(ids).logits.float().numpy(), loaded.model(ids).logits.float().numpy()
    np.testing.assert_array_equal(got, want)


def test_a_client_round_trains_the_family_targets_and_a_foreign_adapter_is_refused(checkpoint, pools, tiny):
    loaded = load_base_model(str(checkpoint))
    spec = build_population(pools.client, 2, 0.5, 8)[1]
    trainer = ClientTrainer(spec, loaded.model, loaded.tokenizer, LoraSettings(), TRAINING)
    update = trainer.train_round(trainer.init_state, round_index=0, lr=1e-3)
    assert update.b_snapshots.shape == (2, (96 + 48) * 8)  # q_proj out 96, v_proj out 2 heads x 24, r=8
    assert np.abs(update.b_snapshots[-1]).sum() > 0
    layers = {k.split(".layers.")[1].split(".")[0] for k in update.lora_state}
    modules = {m for k in update.lora_state for m in ("q_proj", "v_proj") if m in k}
    assert layers == {"0", "1", "2"} and modules == {"q_proj", "v_proj"}
    foreign = get_lora_state(attach_lora(copy.deepcopy(tiny.model), LoraSettings()))
    with pytest.raises(
        LoraStateError, match="do not match the model: missing"
    ):  # the aggregator's layout check
        validate_lora_state(foreign, update.lora_state)
    with pytest.raises(LoraStateError):
        set_lora_state(trainer.model, foreign)


@pytest.fixture(scope="module")
def qwen_probe(tmp_path_factory):
    """A Qwen2 checkpoint, a probe built for it by the project's pipeline and exported to a registry."""
    from probes.artifact import export_linear_probe, load_artifact
    from probes.classifier import ProbeTrainingConfig
    from probes.dataset import ProbeDatasetConfig, build_probe_dataset
    from probes.experiment import run_probe_experiment

    directory = save_random_checkpoint("qwen2", tmp_path_factory.mktemp("models") / "my-qwen")
    config = ProbeDatasetConfig(
        model=str(directory),
        train_trajectories={"maliciousgen": 16, "helpful": 10, "alpaca": 6},  # the quick probe's plan
        test_trajectories={"maliciousgen": 4, "helpful": 2, "alpaca": 2, "dolly": 2},
        client_settings=(),
        client_setting_trajectories=0,
        selfgen_harmful=0,
        steps=3,
        batch_size=4,
        lr=1e-3,
        max_seq_len=48,
    )
    dataset = build_probe_dataset(config, progress=False)
    assert dataset.meta["model"] == "my-qwen"
    main, _ = run_probe_experiment(dataset, ProbeTrainingConfig(), "my-qwen-probe", fpr=0.05, min_step=2)
    registry = tmp_path_factory.mktemp("registry")
    export_linear_probe(
        registry / "my-qwen-probe",
        "my-qwen-probe",
        main.model.linear.weight.detach().float().numpy().reshape(-1),
        float(main.model.linear.bias.detach()),
        main.spec,
        base_model=dataset.meta["model"],
        fingerprint=dataset.meta["base_fingerprint"],
        lora=dataset.meta["config"]["lora"],
        threshold=main.threshold,
        training_data_hash=dataset.content_hash(),
        min_step=main.min_step,
    )
    manifest = load_artifact(registry / "my-qwen-probe").manifest
    assert manifest.base_model.name == "my-qwen"
    assert manifest.base_model.fingerprint == load_base_model(str(directory)).fingerprint
    assert list(manifest.lora.target_modules) == ["q_proj", "v_proj"]
    return directory, registry


def test_the_rest_probe_service_scores_the_models_adapter_and_refuses_another_base(
    qwen_probe, tiny, pools, tmp_path, free_port
):
    import os

    import ray
    from ray import serve

    from services.probe_service.client import ProbeServiceClient, ProbeServiceClientError
    from services.probe_service.deployment import start_probe_service
    from services.probe_service.settings import AutoscalingSettings, ProbeServiceSettings

    directory, registry = qwen_probe
    loaded = load_base_model(str(directory))
    trainer = ClientTrainer(build_population(pools.client, 1, 0.0, 8)[0], loaded.model, loaded.tokenizer,
                            LoraSettings(), TRAINING)  # fmt: skip
    trainer.train_round(trainer.init_state, round_index=0, lr=1e-3)
    ours = tmp_path / "qwen-adapter"
    trainer.model.save_pretrained(ours, save_embedding_layers=False)
    assert json.loads((ours / "adapter_config.json").read_text())["base_model_name_or_path"] == "my-qwen"
    theirs = tmp_path / "tiny-adapter"
    attach_lora(copy.deepcopy(tiny.model), LoraSettings()).save_pretrained(
        theirs, save_embedding_layers=False
    )

    settings = ProbeServiceSettings(
        artifacts_dir=registry,
        port=free_port(),
        scorer_autoscaling=AutoscalingSettings(min_replicas=1, max_replicas=1),
        ingress_autoscaling=AutoscalingSettings(min_replicas=1, max_replicas=1),
    )
    saved = dict(os.environ)
    os.environ.update(settings.ray_environment())
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False, configure_logging=False)
    try:
        url = start_probe_service(settings)
        with ProbeServiceClient(url, timeout_s=60) as client:
            result = client.score_adapter_dir(ours)  # the probe is found by the adapter's base model name
            assert result.probe_id == "my-qwen-probe" and 0.0 <= result.probability <= 1.0
            with pytest.raises(ProbeServiceClientError) as refused:
                client.score_adapter_dir(theirs, probe_id="my-qwen-probe")
        assert refused.value.status_code == 422
        assert "'tiny-llama'" in refused.value.detail and "'my-qwen'" in refused.value.detail
    finally:
        serve.shutdown()
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)
