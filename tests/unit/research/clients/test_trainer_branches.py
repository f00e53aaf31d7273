"""The shadow branch is seeded on its own: trained with the main branch or apart from it, it is the same."""

import copy

import numpy as np
import pytest

from research.clients.population import ClientSpec
from research.clients.trainer import ClientTrainer
from shared.client_training import HonestTrainer
from shared.config import LocalTrainingConfig, LoraSettings

TRAINING = LocalTrainingConfig(local_steps=2, batch_size=2, max_seq_len=64, shadow_lr=5e-3)


@pytest.fixture(scope="module")
def client(tiny, pools):
    shard = tuple((p.instruction, p.harmful) for p in pools.client.harmful[:4])
    spec = ClientSpec("client-001", "malicious", shard)
    return ClientTrainer(spec, copy.deepcopy(tiny.model), tiny.tokenizer, LoraSettings(), TRAINING, seed=5)


def test_shadow_branch_apart_equals_shadow_branch_with_the_main_one(client):
    start = client.init_state
    moved = {k: v + np.float32(0.01) for k, v in start.items()}  # another global adapter
    together = client.train_round(moved, 1, 5e-3, shadow=True)
    main_only = client.train_round(moved, 1, 5e-3, shadow=False)
    apart = client.train_shadow(1)
    assert together.shadow_snapshots.shape == (2, together.b_snapshots.shape[1])
    np.testing.assert_array_equal(apart, together.shadow_snapshots)
    for key in start:  # the main branch does not depend on whether the shadow branch ran
        np.testing.assert_array_equal(main_only.lora_state[key], together.lora_state[key])
    assert main_only.shadow_snapshots.size == 0
    # the shadow branch restarts from θ^0, whatever adapter the round began from
    np.testing.assert_array_equal(client.train_round(start, 1, 5e-4, shadow=True).shadow_snapshots, apart)
    assert not np.array_equal(client.train_shadow(2), apart)  # each round its own subset and stream


def test_shadow_branch_needs_a_shadow_lr(tiny, pools):
    spec = ClientSpec("client-002", "benign", (("q", "a"),))
    plain = ClientTrainer(
        spec, copy.deepcopy(tiny.model), tiny.tokenizer, LoraSettings(), LocalTrainingConfig()
    )
    with pytest.raises(ValueError, match="shadow_lr"):
        plain.train_shadow(0)


def test_a_client_without_an_attack_trains_exactly_as_the_honest_trainer(tiny, pools):
    """The simulation's benign clients (and malicious ones without an attack) are what a participant runs."""
    shard = tuple((p.instruction, p.harmful) for p in pools.client.harmful[:5])
    start = None
    updates = []
    for make in (
        lambda m: HonestTrainer("client-003", shard, m, tiny.tokenizer, LoraSettings(), TRAINING, seed=7),
        lambda m: ClientTrainer(
            ClientSpec("client-003", "malicious", shard), m, tiny.tokenizer, LoraSettings(), TRAINING, seed=7
        ),
    ):
        trainer = make(copy.deepcopy(tiny.model))
        start = start or {k: v + np.float32(0.01) for k, v in trainer.init_state.items()}
        updates.append((trainer.train_round(start, 3, 5e-3), trainer.train_shadow(4)))
    (honest, honest_shadow), (simulated, simulated_shadow) = updates
    for key in start:
        np.testing.assert_array_equal(honest.lora_state[key], simulated.lora_state[key])
    np.testing.assert_array_equal(honest.b_snapshots, simulated.b_snapshots)
    np.testing.assert_array_equal(honest.shadow_snapshots, simulated.shadow_snapshots)
    np.testing.assert_array_equal(honest_shadow, simulated_shadow)
    assert (honest.train_loss, honest.num_samples) == (simulated.train_loss, simulated.num_samples)
    assert not np.array_equal(honest.lora_state[next(iter(start))], start[next(iter(start))])  # it trained
