"""Server-side realignment on tiny-llama with real PEFT training: deterministic, alignment pool only, and
run by the aggregator after whatever rule aggregated the round."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services.aggregator.realignment import Realigner, RealignmentSettings
from services.aggregator.service import AggregatorService
from services.aggregator.settings import AggregatorSettings, FederationConfig
from services.aggregator.state import InMemoryStateStore, RoundPhase
from services.aggregator.strategies import make_strategy
from shared.config import LocalTrainingConfig, LoraSettings
from shared.data.sources import normalise_instruction
from shared.lora import attach_lora, get_lora_state
from shared.lora_state import LoraState
from shared.updates import ClientUpdate

pytestmark = pytest.mark.integration
SETTINGS = RealignmentSettings(
    enabled=True, steps=2, refusals_per_batch=1, helpful_per_batch=1, max_seq_len=64
)
CLIENTS = ("a", "b", "c")


@pytest.fixture(scope="module")
def initial(tiny) -> LoraState:
    """The tiny model's LoRA init with a non-zero B (so A's gradients are not zero either)."""
    state = get_lora_state(attach_lora(load_fresh(), LoraSettings()))
    rng = np.random.default_rng(0)
    return {k: (v + 0.01 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in state.items()}


def load_fresh():
    from shared.model_zoo import load_base_model

    return load_base_model("tiny-llama").model


@pytest.fixture(scope="module")
def realigner() -> Realigner:
    return Realigner(SETTINGS, "tiny-llama", LoraSettings())


def _differs(a: LoraState, b: LoraState) -> bool:
    return any(not np.array_equal(a[k], b[k]) for k in a)


def test_realignment_moves_the_state_deterministically(initial, realigner):
    first, record = realigner.realign(initial, round_index=0)
    again, _ = Realigner(SETTINGS, "tiny-llama", LoraSettings()).realign(initial, round_index=0)  # own model
    assert first.keys() == initial.keys() and _differs(first, initial)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    other_round, second = realigner.realign(initial, round_index=1)
    assert _differs(other_round, first)  # round 1 draws other batches
    assert record.steps == len(record.losses) == 2 and all(np.isfinite(record.losses))
    assert record.seconds > 0 and second.load_seconds == 0.0  # the base model is loaded once
    assert record.note().startswith("realigned: 2 steps at lr 0.0002")


def test_realignment_trains_only_on_alignment_pool_samples(initial, pools):
    realigner = Realigner(SETTINGS.model_copy(update={"steps": 6}), "tiny-llama", LoraSettings())
    realigner.realign(initial, round_index=3)
    trained = realigner.trained_samples()
    planned = {(s.kind, s.instruction) for batch in realigner.batches(3) for s in batch}
    assert {(s.kind, s.instruction) for s in trained} == planned
    used = {normalise_instruction(s.instruction) for s in trained}
    assert len(used) >= 6
    assert used <= pools.alignment.instructions()
    assert not used & pools.evaluation.instructions()


def _updates(initial: LoraState) -> list[ClientUpdate]:
    task = LocalTrainingConfig()
    out = []
    for n, cid in enumerate(CLIENTS):
        rng = np.random.default_rng(n + 1)
        state = {k: (v + 0.02 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in initial.items()}
        out.append(ClientUpdate(cid, 0, 10, state, batch_size=task.batch_size))
    return out


def _close(service: AggregatorService, updates: list[ClientUpdate]):
    async def run():
        service.open_round(0)
        for update in updates:
            await service.submit(update)
        return await service.close_round(0)

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("strategy", "options"),
    [("fedavg", {}), ("median", {}), ("krum", {"num_attackers": 0}), ("norm_clipping", {})],
)
def test_close_round_realigns_after_any_strategy(initial, realigner, strategy, options):
    settings = AggregatorSettings(
        defense=strategy,
        strategy_options=options,
        model="tiny-llama",
        federation=FederationConfig(clients_per_round=len(CLIENTS)),
        realignment=SETTINGS,
    )
    service = AggregatorService(InMemoryStateStore(), settings, initial, population=list(CLIENTS))
    updates = _updates(initial)
    summary = _close(service, updates)
    aggregate = make_strategy(strategy, **options).aggregate(initial, updates, round_index=0).state
    expected, _ = realigner.realign(aggregate, round_index=0)
    committed = service.store.get_global()[1]
    assert summary.phase is RoundPhase.AGGREGATED and summary.realignment is not None
    assert _differs(committed, aggregate)
    for key in expected:
        np.testing.assert_array_equal(committed[key], expected[key])
    assert all("realigned: 2 steps" in a.reason for a in service.store.decision_log())


def test_a_skipped_round_is_not_realigned(initial):
    settings = AggregatorSettings(
        defense="fedavg",
        model="tiny-llama",
        federation=FederationConfig(clients_per_round=1),
        realignment=SETTINGS,
    )
    service = AggregatorService(InMemoryStateStore(), settings, initial, population=["a"])
    summary = _close(service, [])
    assert summary.phase is RoundPhase.SKIPPED and summary.realignment is None
    committed = service.store.get_global()[1]
    for key in initial:
        np.testing.assert_array_equal(committed[key], initial[key])
