import numpy as np
import pytest

from services.aggregator.update_bounds import UpdateOutOfBounds, bound_update, max_num_samples
from shared.config import LocalTrainingConfig
from shared.updates import ClientUpdate

TASK = LocalTrainingConfig(local_steps=5, batch_size=4)


def _update(num_samples: int, batch_size: int = 4, steps: int = 5) -> ClientUpdate:
    return ClientUpdate(
        "c", 0, num_samples, {}, b_snapshots=np.zeros((steps, 3), np.float32), batch_size=batch_size
    )


def test_the_task_bounds_the_weight_a_client_may_claim():
    assert max_num_samples(TASK) == 20
    honest = bound_update(_update(20), TASK, "reject")
    assert (honest.num_samples, honest.batch_size, honest.notes) == (20, 4, "")
    assert bound_update(_update(7, batch_size=0), TASK, "reject").batch_size == 4  # unstated: the task's
    with pytest.raises(UpdateOutOfBounds, match="num_samples 1000000000000000 > the task's subset of 20"):
        bound_update(_update(10**15), TASK, "reject")
    with pytest.raises(UpdateOutOfBounds, match="batch_size 64 != the task's 4"):
        bound_update(_update(20, batch_size=64), TASK, "reject")
    clipped = bound_update(_update(10**15, batch_size=64), TASK, "clip")
    assert (clipped.num_samples, clipped.batch_size) == (20, 4)
    assert (
        clipped.notes
        == "clipped: num_samples 1000000000000000 > the task's subset of 20; batch_size 64 != the task's 4"
    )


@pytest.mark.parametrize("steps", [1, 4, 6, 500])
def test_snapshot_rows_must_be_the_task_s_local_steps_under_either_policy(steps):
    for policy in ("reject", "clip"):
        with pytest.raises(UpdateOutOfBounds, match=f"{steps} rows, the task has 5 local steps"):
            bound_update(_update(20, steps=steps), TASK, policy)  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", ["reject", "clip"])
def test_a_client_claiming_10_15_samples_does_not_capture_the_global_adapter(policy):
    import asyncio

    from services.aggregator.errors import InvalidSubmission
    from services.aggregator.service import AggregatorService
    from services.aggregator.settings import AggregatorSettings, FederationConfig
    from services.aggregator.state import InMemoryStateStore

    key = "layers.0.v_proj.lora_B.weight"
    settings = AggregatorSettings(
        defense="fedavg",
        training=TASK,
        oversized_updates=policy,
        federation=FederationConfig(clients_per_round=2),
    )
    service = AggregatorService(
        InMemoryStateStore(), settings, {key: np.zeros((3, 2), np.float32)}, population=["honest", "greedy"]
    )
    service.open_round(0)

    def update(cid: str, value: float, n: int) -> ClientUpdate:
        return ClientUpdate(cid, 0, n, {key: np.full((3, 2), value, np.float32)}, batch_size=4)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(service.submit(update("honest", 1.0, 20)))
    greedy = update("greedy", -9.0, 10**15)
    if policy == "reject":
        with pytest.raises(InvalidSubmission, match="num_samples 1000000000000000"):
            loop.run_until_complete(service.submit(greedy))
        loop.run_until_complete(service.submit(update("greedy", -9.0, 20)))
    else:
        loop.run_until_complete(service.submit(greedy))
    summary = loop.run_until_complete(service.close_round(0))
    loop.close()
    assert summary.weights == {"honest": 0.5, "greedy": 0.5}  # 20 : 20, not 20 : 10^15
    np.testing.assert_allclose(service.store.get_global(1)[1][key], (1.0 - 9.0) / 2)
    audit = {a.client_id: a.reason for a in service.store.decision_log()}
    clipped = "clipped: num_samples 1000000000000000 > the task's subset of 20"
    assert (clipped in audit["greedy"]) == (policy == "clip") and "clipped" not in audit["honest"]
