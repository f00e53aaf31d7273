"""Server-side realignment's pure parts: settings, the batch plan, the data it may read, and the service's
hook when it is off (no model is loaded here; the real PEFT runs are in tests/integration)."""

import asyncio

import numpy as np
import pytest
from pydantic import ValidationError

from services.aggregator.realignment import (
    AlignmentData,
    Realigner,
    RealignmentSettings,
    batch_plan,
    instructions_of,
    split_realignment,
)
from services.aggregator.service import AggregatorService
from services.aggregator.settings import AggregatorSettings, FederationConfig
from services.aggregator.state import InMemoryStateStore, RoundPhase
from services.aggregator.strategies import make_strategy
from shared.config import LocalTrainingConfig, LoraSettings
from shared.data.refusal_targets import REFUSAL_OPENINGS
from shared.data.sources import normalise_instruction
from shared.updates import ClientUpdate

KEY = "layers.0.v_proj.lora_B.weight"


def test_off_by_default_with_the_pilots_recipe():
    settings = AggregatorSettings().realignment
    assert settings.enabled is False
    assert (settings.steps, settings.refusals_per_batch, settings.helpful_per_batch, settings.lr) == (
        10,
        2,
        6,
        2e-4,
    )


def test_the_environment_turns_it_on(monkeypatch):
    monkeypatch.setenv("SAFE_FEDLLM_AGGREGATOR_REALIGNMENT__ENABLED", "true")
    monkeypatch.setenv("SAFE_FEDLLM_AGGREGATOR_REALIGNMENT__STEPS", "30")
    settings = AggregatorSettings().realignment
    assert settings.enabled and settings.steps == 30


def test_settings_refuse_empty_batches_and_zero_steps():
    with pytest.raises(ValidationError, match="refusals_per_batch"):
        RealignmentSettings(refusals_per_batch=0, helpful_per_batch=0)
    with pytest.raises(ValidationError):
        RealignmentSettings(steps=0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("shadow+realign", ("shadow", True)), ("fedavg", ("fedavg", False)), ("realign", ("realign", False))],
)
def test_split_realignment(name, expected):
    assert split_realignment(name) == expected


def test_an_unknown_base_model_is_refused_at_start():
    settings = AggregatorSettings(
        defense="fedavg", model="toy-model", realignment=RealignmentSettings(enabled=True)
    )
    with pytest.raises(ValueError, match="known base model"):
        AggregatorService(
            InMemoryStateStore(), settings, {KEY: np.zeros((3, 2), np.float32)}, population=["a"]
        )


def test_batch_plan_is_seeded_by_round_and_sized_by_the_settings():
    settings = RealignmentSettings(steps=4, refusals_per_batch=2, helpful_per_batch=3, seed=5)
    plan = batch_plan(settings, 7, 3, round_index=0)
    assert plan == batch_plan(settings, 7, 3, round_index=0)
    assert len(plan) == 4
    assert all(len(r) == 2 and len(h) == 3 for r, h in plan)
    assert all(0 <= i < 7 for r, _ in plan for i in r) and all(0 <= i < 3 for _, h in plan for i in h)
    assert plan != batch_plan(settings, 7, 3, round_index=1)
    assert plan != batch_plan(settings.model_copy(update={"seed": 6}), 7, 3, round_index=0)
    with pytest.raises(ValueError, match="lacks"):
        batch_plan(settings, 0, 3, round_index=0)


def test_alignment_data_comes_from_the_alignment_pool_only(pools):
    with pytest.raises(ValueError, match="alignment pool only"):
        AlignmentData.from_pool(pools.evaluation, 2)
    data = AlignmentData.from_pool(pools.alignment, 2)
    assert len(data.refusals) == len(pools.alignment.harmful) and len(data.helpful) == len(
        pools.alignment.helpful
    )
    assert all(s.target.startswith(REFUSAL_OPENINGS) for s in data.refusals)


def test_the_realigners_batches_never_touch_the_evaluation_pool(pools):
    realigner = Realigner(RealignmentSettings(steps=50), "tiny-llama", LoraSettings())
    used = {normalise_instruction(t) for r in range(5) for t in instructions_of(realigner.batches(r))}
    assert len(used) > 200  # 5 rounds x 50 steps x 8 samples, mostly distinct
    assert used <= pools.alignment.instructions()
    assert not used & pools.evaluation.instructions()
    assert not used & pools.client.instructions() and not used & pools.probe.instructions()


def _updates(global_state, shifts):
    task = LocalTrainingConfig()
    return [
        ClientUpdate(cid, 0, 10, {KEY: global_state[KEY] + shift}, batch_size=task.batch_size)
        for cid, shift in shifts.items()
    ]


@pytest.mark.parametrize("strategy", ["fedavg", "median", "trimmed_mean"])
def test_off_leaves_the_aggregate_bit_identical(strategy):
    initial = {KEY: np.arange(6, dtype=np.float32).reshape(3, 2) / 7}
    shifts = {"a": 0.1, "b": 0.35, "c": -0.2}
    settings = AggregatorSettings(defense=strategy, federation=FederationConfig(clients_per_round=3))
    service = AggregatorService(InMemoryStateStore(), settings, initial, population=list(shifts))
    assert service.realigner is None
    service.open_round(0)
    updates = _updates(initial, shifts)

    async def run():
        for update in updates:
            await service.submit(update)
        return await service.close_round(0)

    summary = asyncio.run(run())
    assert summary.phase is RoundPhase.AGGREGATED and summary.realignment is None
    expected = make_strategy(strategy).aggregate(initial, updates, round_index=0).state
    np.testing.assert_array_equal(service.store.get_global()[1][KEY], expected[KEY])
    assert not any("realigned" in a.reason for a in service.store.decision_log())
