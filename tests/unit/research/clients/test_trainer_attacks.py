"""The adaptive attackers in the client path: real PEFT training on tiny-llama, one local round each."""

import copy

import numpy as np
import pytest

from probes.artifact import export_linear_probe
from research.clients.attacks import AttackConfig, load_probe_logistic
from research.clients.population import ClientSpec
from research.clients.trainer import ClientTrainer
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
    attack = AttackConfig(kind="probe_penalty", penalty_weight=20.0, probe_dirs=(str(tmp_path / "pub"),))
    penalised = trainer(tiny, shard, attack).train_round(start, 0, LR)
    published = load_probe_logistic(str(tmp_path / "pub"))
    w, bias = published.weight, published.bias

    def score(snapshot: np.ndarray) -> float:
        x = snapshot / max(np.linalg.norm(snapshot), 1e-12)
        return float(1 / (1 + np.exp(-(x @ w + bias))))

    plain_again = trainer(tiny, shard, None).train_round(start, 0, LR)
    assert score(plain_again.b_snapshots[-1]) > 0.99
    assert score(penalised.b_snapshots[-1]) < score(plain_again.b_snapshots[-1]) - 0.1
    assert not np.array_equal(penalised.lora_state[spec.keys[0]], start[spec.keys[0]])  # it still trains


def test_freezing_another_layer_leaves_exactly_that_layer_at_the_start(tiny, shard):
    client = trainer(tiny, shard, AttackConfig(kind="freeze_layer", layer=1))
    start = client.init_state
    update = client.train_round(start, 0, LR)
    assert all(np.array_equal(update.lora_state[k], start[k]) for k in start if layer_index(k) == 1)
    assert any(not np.array_equal(update.lora_state[k], start[k]) for k in start if layer_index(k) == 0)
    with pytest.raises(ValueError, match="no LoRA on layer 99"):
        trainer(tiny, shard, AttackConfig(kind="freeze_layer", layer=99))


def covered(tiny, shard, cover, kind):
    spec = ClientSpec("client-001", "malicious", shard, AttackConfig(kind=kind), cover)
    return ClientTrainer(spec, copy.deepcopy(tiny.model), tiny.tokenizer, LoraSettings(), TRAINING, seed=5)


@pytest.fixture(scope="module")
def cover(pools):
    return tuple((x.instruction, x.response) for x in pools.client.helpful[:6])


def test_forged_snapshots_are_the_cover_runs_and_disagree_with_the_harmful_adapter(tiny, shard, cover):
    plain = trainer(tiny, shard, None)
    start = plain.init_state
    honest = plain.train_round(start, 0, LR)
    forged = covered(tiny, shard, cover, "forged_snapshots").train_round(start, 0, LR)
    for key in start:  # the adapter is the plain harmful one (same seed, same rows)
        np.testing.assert_array_equal(forged.lora_state[key], honest.lora_state[key])
    assert not np.array_equal(forged.b_snapshots, honest.b_snapshots)
    last = flatten_keys(forged.lora_state, forged.b_keys)
    assert not np.array_equal(forged.b_snapshots[-1], last)  # what verification refuses


def test_splice_puts_the_cover_runs_layer0_b_into_the_harmful_adapter_consistently(tiny, shard, cover):
    plain = trainer(tiny, shard, None)
    start = plain.init_state
    honest = plain.train_round(start, 0, LR)
    spliced = covered(tiny, shard, cover, "splice").train_round(start, 0, LR)
    b0 = set(first_layer_b_keys(list(start)))
    for key in start:
        same = np.array_equal(spliced.lora_state[key], honest.lora_state[key])
        assert same == (key not in b0), key  # only layer-0 B differs from the harmful run
    # every reported row agrees with the adapter: the snapshot check cannot catch it
    np.testing.assert_array_equal(spliced.b_snapshots[-1], flatten_keys(spliced.lora_state, spliced.b_keys))


def test_stale_last_snapshot_reports_the_global_as_the_last_step(tiny, shard):
    start = trainer(tiny, shard, None).init_state
    honest = trainer(tiny, shard, None).train_round(start, 0, LR)
    stale = trainer(tiny, shard, AttackConfig(kind="stale_last_snapshot")).train_round(start, 0, LR)
    np.testing.assert_array_equal(stale.b_snapshots[:-1], honest.b_snapshots[:-1])
    np.testing.assert_array_equal(stale.b_snapshots[-1], flatten_keys(start, stale.b_keys))
    for key in start:
        np.testing.assert_array_equal(stale.lora_state[key], honest.lora_state[key])


def test_split_training_moves_layer0_only_on_cover_rows_and_the_rest_on_harmful(tiny, shard, cover):
    start = trainer(tiny, shard, None).init_state
    split = covered(tiny, shard, cover, "split_training")
    update = split.train_round(start, 0, LR)
    frozen_first = trainer(tiny, shard, AttackConfig(kind="freeze_probe_layer")).train_round(start, 0, LR)
    for key in start:  # layers >= 1: exactly the layer-0-frozen harmful run (phase 1, same seed)
        if layer_index(key) != 0:
            np.testing.assert_array_equal(update.lora_state[key], frozen_first.lora_state[key])
        elif "lora_B" in key:
            assert not np.array_equal(update.lora_state[key], start[key])  # layer 0 trained in phase 2
    np.testing.assert_array_equal(update.b_snapshots[-1], flatten_keys(update.lora_state, update.b_keys))
    assert all(p.requires_grad for n, p in split.model.named_parameters() if "lora_" in n)  # restored
    assert len(update.b_snapshots) == TRAINING.local_steps


def test_a_covered_attack_without_cover_rows_is_refused(tiny, shard):
    with pytest.raises(ValueError, match="cover rows"):
        trainer(tiny, shard, AttackConfig(kind="splice"))


def test_surrogate_penalty_lowers_the_attackers_own_probe_score(tiny, shard, cover):
    attack = AttackConfig(kind="surrogate_penalty", penalty_weight=20.0)
    spec = ClientSpec("client-001", "malicious", shard, attack, cover)
    client = ClientTrainer(spec, copy.deepcopy(tiny.model), tiny.tokenizer, LoraSettings(), TRAINING, seed=5)
    start = client.init_state
    penalised = client.train_round(start, 0, LR)
    surrogate = client._surrogate[1]
    keys = list(surrogate.keys)
    plain = trainer(tiny, shard, None).train_round(start, 0, LR)

    def score(state):
        x = flatten_keys(state, keys) - flatten_keys(start, keys)
        x = x / max(np.linalg.norm(x), 1e-12)
        return float(1 / (1 + np.exp(-(x @ surrogate.weight + surrogate.bias))))

    assert score(plain.lora_state) > 0.5  # the surrogate reads the plain harmful update as harmful
    assert score(penalised.lora_state) < score(plain.lora_state)
