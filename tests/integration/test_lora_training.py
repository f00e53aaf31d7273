"""LoRA creation, state handling and the local training loop on the tiny model (real PEFT, real torch)."""

import numpy as np
import pytest
import torch

from research.clients.population import ClientSpec, build_population
from research.clients.trainer import ClientTrainer
from shared.config import LocalTrainingConfig, LoraSettings
from shared.lora import attach_lora, get_lora_state, set_lora_state
from shared.lora_state import LoraStateError, first_layer_b_keys
from shared.model_zoo import load_base_model

TRAINING = LocalTrainingConfig(local_steps=3, batch_size=2, max_seq_len=64)


def test_fixed_init_is_reproducible_and_b_starts_at_zero():
    a = get_lora_state(attach_lora(load_base_model("tiny-llama").model, LoraSettings()))
    b = get_lora_state(attach_lora(load_base_model("tiny-llama").model, LoraSettings()))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        if "lora_B" in key:
            assert not a[key].any()
    assert {k.split(".")[-3] for k in a} == {"q_proj", "v_proj"}


def test_first_layer_b_keys_are_layer_zero_sorted(tiny):
    state = get_lora_state(attach_lora(load_base_model("tiny-llama").model, LoraSettings()))
    keys = first_layer_b_keys(state)
    assert keys == sorted(keys) and len(keys) == 2
    assert all(".layers.0." in k and "lora_B" in k for k in keys)
    assert keys[0].endswith("q_proj.lora_B.weight")


def test_set_lora_state_rejects_wrong_shapes_keys_and_nan():
    model = attach_lora(load_base_model("tiny-llama").model, LoraSettings())
    state = get_lora_state(model)
    key = next(iter(state))
    with pytest.raises(LoraStateError, match="shape"):
        set_lora_state(model, {**state, key: np.zeros((1, 1), np.float32)})
    with pytest.raises(LoraStateError, match="missing"):
        set_lora_state(model, {k: v for k, v in state.items() if k != key})
    nan_state = {**state, key: np.full_like(state[key], np.nan)}
    with pytest.raises(LoraStateError, match="NaN"):
        set_lora_state(model, nan_state)


@pytest.mark.precision
def test_client_round_trains_and_snapshots_layer0_b(pools):
    loaded = load_base_model("tiny-llama")
    spec = build_population(pools.client, 2, 0.5, 20)[1]
    trainer = ClientTrainer(spec, loaded.model, loaded.tokenizer, LoraSettings(), TRAINING)
    start = get_lora_state(trainer.model)
    update = trainer.train_round(start, round_index=0, lr=1e-3)
    assert update.num_samples == 6
    assert update.b_snapshots.shape == (3, (64 + 32) * 8)  # q_proj out 64, v_proj out 32 (GQA), r=8
    assert np.abs(update.b_snapshots[-1]).sum() > 0
    b_keys = first_layer_b_keys(update.lora_state)
    np.testing.assert_allclose(
        update.b_snapshots[-1], np.concatenate([update.lora_state[k].reshape(-1) for k in b_keys]), rtol=1e-6
    )
    again = trainer.train_round(start, round_index=0, lr=1e-3)  # same round, same start: same result
    np.testing.assert_allclose(again.b_snapshots, update.b_snapshots, rtol=1e-5, atol=1e-7)


def test_client_rejects_empty_shard_and_foreign_adapter(pools):
    loaded = load_base_model("tiny-llama")
    with pytest.raises(ValueError, match="empty data shard"):
        ClientTrainer(ClientSpec("c", "benign", ()), loaded.model, loaded.tokenizer, LoraSettings(), TRAINING)
    spec = build_population(pools.client, 1, 0.0, 5)[0]
    trainer = ClientTrainer(spec, loaded.model, loaded.tokenizer, LoraSettings(), TRAINING)
    foreign = get_lora_state(attach_lora(load_base_model("tiny-llama").model, LoraSettings(r=4)))
    with pytest.raises(LoraStateError, match="shape"):
        trainer.train_round(foreign, 0, 1e-3)


@pytest.mark.precision
def test_bf16_base_keeps_fp32_lora_and_the_fingerprint():
    from shared.model_zoo.sharing import export_frozen_base, materialize_frozen_base

    fp32 = load_base_model("tiny-llama", compute_dtype="float32")
    bf16 = load_base_model("tiny-llama", compute_dtype="bfloat16")
    assert bf16.fingerprint == fp32.fingerprint  # a probe made on one dtype fits the other
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    # the rotary frequencies stay float32, as a client's rebuilt copy computes them
    assert bf16.model.model.rotary_emb.inv_freq.dtype == torch.float32
    # the frozen base travels to client actors as raw 16-bit words and comes back bit-identical
    rebuilt = materialize_frozen_base(export_frozen_base(bf16.model, bf16.fingerprint))
    original = dict(bf16.model.named_parameters())
    for name, param in rebuilt.named_parameters():
        assert param.dtype == torch.bfloat16 and torch.equal(param, original[name]), name
    model = attach_lora(rebuilt, LoraSettings())
    lora = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
    assert lora and set(lora.values()) == {torch.float32}  # master weights and AdamW state stay fp32


def test_the_response_loss_is_the_full_forward_loss_and_gives_the_same_gradients(tiny):
    """Projecting labelled positions only changes nothing but the cost: rows with prompts and padding of
    different lengths, the loss and every LoRA gradient as the full forward's (float32)."""
    from shared.prompting import IGNORE_INDEX, collate, tokenize_sft
    from shared.training import response_loss

    model = attach_lora(load_base_model("tiny-llama", compute_dtype="float32").model, LoraSettings())
    model.eval()  # no LoRA dropout: both passes see the same network
    rows = [("Name a colour.", "Blue."), ("Write two sentences about the tides.", "The sea. " * 6)]
    batch = collate([tokenize_sft(tiny.tokenizer, q, a, 64) for q, a in rows], tiny.tokenizer.pad_token_id)
    assert (batch["labels"] == IGNORE_INDEX).sum() > (batch["labels"] != IGNORE_INDEX).sum() / 2
    params = [p for p in model.parameters() if p.requires_grad]
    losses, grads = [], []
    for loss_of in (lambda: model(**batch).loss, lambda: response_loss(model, batch)):
        model.zero_grad()
        loss = loss_of()
        loss.backward()
        losses.append(float(loss))
        grads.append([p.grad.clone() for p in params])
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    for full, fast in zip(*grads, strict=True):
        torch.testing.assert_close(fast, full, rtol=1e-4, atol=1e-7)
