"""The adaptive attackers in the client path: real PEFT training on tiny-llama, one local round each."""

import copy

import numpy as np
import pytest

from probes.artifact import export_linear_probe
from services.clients.attacks import AttackConfig, load_probe_logistic
from services.clients.population import ClientSpec
from services.clients.trainer import ClientTrainer
from shared.config import LocalTrainingConfig, LoraSettings
from shared.features import FeatureSpec
from shared.lora_state import first_layer_b_keys, flatten_keys, layer_index

TRAINING = LocalTrainingConfig(local_steps=3, batch_size=2, max_seq_len=64)
LR = 5e-3


@pytest.fixture(scope="module")
def shard(pools):
    return tuple((p.instruction, p.harmful) for p in pools.client.harmful[:6])


def trainer(tiny, shard, attack=None, kind="malicious", training=TRAINING):
    spec = ClientSpec("client-001", kind, shard, attack)
    return ClientTrainer(spec, copy.deepcopy(tiny.model), tiny.tokenizer, LoraSettings(), training, seed=5)


def test_freezing_the_probe_layer_leaves_its_lora_exactly_at_the_start(tiny, shard):
    client = trainer(tiny, shard, AttackConfig(kind="freeze_probe_layer"))
    start = client.init_state
    update = client.train_round(start, 0, LR)
    first = [k for k in start if layer_index(k) == 0]
    assert len(first) == 4  # q and v, A and B
    for key in first:
        np.testing.assert_array_equal(update.lora_state[key], start[key])
    np.testing.assert_array_equal(update.b_snapshots, np.zeros_like(update.b_snapshots))  # B_0 = 0
    assert any(not np.array_equal(update.lora_state[k], start[k]) for k in start if layer_index(k) == 1)


def test_scaling_sends_exactly_factor_times_the_plain_delta(tiny, shard):
    plain = trainer(tiny, shard, None)
    boosted = trainer(tiny, shard, AttackConfig(kind="scaling", scale=2.0))
    start = plain.init_state
    a, b = plain.train_round(start, 0, LR), boosted.train_round(start, 0, LR)
    for key in start:  # training is deterministic, so the boosted delta is twice the plain one
        np.testing.assert_array_equal(
            b.lora_state[key] - start[key], np.float32(2.0) * (a.lora_state[key] - start[key])
        )
    reference = flatten_keys(start, a.b_keys)
    np.testing.assert_array_equal(b.b_snapshots - reference, np.float32(2.0) * (a.b_snapshots - reference))
    np.testing.assert_array_equal(b.b_snapshots[-1], flatten_keys(b.lora_state, b.b_keys))  # consistent


def test_a_benign_client_ignores_an_attack(tiny, shard):
    plain = trainer(tiny, shard, None, kind="benign")
    told = trainer(tiny, shard, AttackConfig(kind="scaling", scale=5.0), kind="benign")
    start = plain.init_state
    a, b = plain.train_round(start, 0, LR), told.train_round(start, 0, LR)
    for key in start:
        np.testing.assert_array_equal(a.lora_state[key], b.lora_state[key])


def test_probe_penalty_lowers_the_published_probes_score(tiny, shard, tmp_path):
    """A probe that reads the plain harmful step as malicious; the penalised attacker's step scores lower."""
    plain = trainer(tiny, shard, None)
    start = plain.init_state
    spec = FeatureSpec.for_adapter(start)
    assert list(spec.keys) == first_layer_b_keys(list(start))
    direction = plain.train_round(start, 0, LR).b_snapshots[-1]
    weight = (direction / np.linalg.norm(direction) * 8).astype(np.float32)  # p ~ sigmoid(8) on that step
    export_linear_probe(
        tmp_path / "pub",
        "pub",
        weight,
        0.0,
        spec,
        base_model="tiny-llama",
        fingerprint=tiny.fingerprint,
        lora=LoraSettings(),
        threshold=0.5,
        training_data_hash="0" * 16,
    )
    attack = AttackConfig(kind="probe_penalty", penalty_weight=20.0, probe_dir=str(tmp_path / "pub"))
    penalised = trainer(tiny, shard, attack).train_round(start, 0, LR)
    w, bias, _ = load_probe_logistic(str(tmp_path / "pub"))

    def score(snapshot: np.ndarray) -> float:
        x = snapshot / max(np.linalg.norm(snapshot), 1e-12)
        return float(1 / (1 + np.exp(-(x @ w + bias))))

    plain_again = trainer(tiny, shard, None).train_round(start, 0, LR)
    assert score(plain_again.b_snapshots[-1]) > 0.99
    assert score(penalised.b_snapshots[-1]) < score(plain_again.b_snapshots[-1]) - 0.1
    assert not np.array_equal(penalised.lora_state[spec.keys[0]], start[spec.keys[0]])  # it still trains
