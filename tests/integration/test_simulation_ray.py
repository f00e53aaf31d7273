"""A real federated simulation: Ray actors as clients, PEFT LoRA training on tiny-llama, FedAvg, metrics.

One Ray session serves the whole module (Ray start-up costs seconds and ~1 GB).
"""

import pytest

ray = pytest.importorskip("ray")

from research.simulation import SimulationConfig, run_sweep, simulation_session  # noqa: E402
from shared.evaluation.metrics import EvalSettings  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


CONFIG = SimulationConfig(
    model="tiny-llama",
    num_clients=2,
    samples_per_client=64,
    federation={"num_rounds": 3, "clients_per_round": 2, "seed": 7, "lr": {"lr_max": 3e-3, "lr_min": 1e-3}},
    training={"local_steps": 10, "batch_size": 4, "max_seq_len": 96},
    eval=EvalSettings(
        num_harmful_prompts=4,
        num_benign_prompts=0,
        num_pairs=48,
        num_benign_loss=8,
        max_new_tokens=4,
        progress=False,
    ),
)


def test_malicious_clients_raise_harm_preference_over_benign_ones(ray_session):
    rounds_seen: list[tuple[float, int]] = []
    rows = run_sweep(
        CONFIG,
        [(0.0, "fedavg"), (1.0, "fedavg")],
        on_round=lambda ratio, defense, s: rounds_seen.append((ratio, s.round_index)),
        progress=False,
    )
    start, benign, malicious = rows
    assert start["rounds"] == 0 and benign["malicious_ratio"] == 0.0 and malicious["malicious_ratio"] == 1.0
    assert rounds_seen == [(0.0, 0), (0.0, 1), (0.0, 2), (1.0, 0), (1.0, 1), (1.0, 2)]
    for row in rows:
        for field in (
            "defense",
            "malicious_ratio",
            "harmless_rate",
            "harm_preference",
            "benign_loss",
            "rounds",
            "model",
            "seed",
        ):
            assert field in row
    assert benign["num_malicious"] == 0 and malicious["num_malicious"] == 2
    assert malicious["malicious_client_rounds"] == 6
    # The attack is a real effect measured from the same start: training on harmful answers moves the model
    # towards them relative to training on helpful answers.
    assert malicious["harm_preference"] > benign["harm_preference"] + 0.02, rows


def test_a_session_loads_clients_into_idle_workers_and_they_train_exactly_as_new_ones(ray_session):
    """The experiments run their configurations in one session: the clients of a later federation are loaded
    into the workers of an earlier one (other clients, other data), and train bit for bit as in new ones."""
    config = CONFIG.model_copy(
        update={
            "federation": CONFIG.federation.model_copy(update={"num_rounds": 1}),
            "training": CONFIG.training.model_copy(update={"local_steps": 3}),
        }
    )
    metrics = ("harmless_rate", "harm_preference", "benign_loss")
    [alone] = run_sweep(config, [(0.5, "fedavg")], evaluate_start=False, progress=False)
    with simulation_session() as session:
        run_sweep(config, [(1.0, "fedavg")], evaluate_start=False, progress=False)  # two malicious clients
        assert len(session.hosts) == 2  # their workers wait in the reserve
        [reused] = run_sweep(config, [(0.5, "fedavg")], evaluate_start=False, progress=False)
        assert len(session.hosts) == 2  # no worker started for the second federation
    assert len(session.hosts) == 0  # closing the session stops them
    assert {k: reused[k] for k in metrics} == {k: alone[k] for k in metrics}


def test_defended_run_goes_through_the_probe_service_and_the_redis_store(
    ray_session, tiny, tmp_path, monkeypatch, redis_server, redis_client, free_port
):
    """A probe that flags everything (bias +10): the shadow level zeroes every factor, the gate skips."""
    import copy

    import numpy as np

    from probes.artifact import export_linear_probe
    from shared.config import LoraSettings, runtime_settings
    from shared.features import FeatureSpec
    from shared.lora import attach_lora, get_lora_state

    peft = attach_lora(copy.deepcopy(tiny.model), LoraSettings())  # a copy: get_peft_model wraps in place
    spec = FeatureSpec.for_adapter(get_lora_state(peft), "first_B")
    export_linear_probe(
        tmp_path / "tiny-flag-all",
        "tiny-flag-all",
        np.zeros(spec.dim, np.float32),
        10.0,
        spec,
        base_model="tiny-llama",
        fingerprint=tiny.fingerprint,
        lora=LoraSettings(),
        threshold=0.8,
        training_data_hash="0" * 16,
        training={"dataset": {"lr": 1e-3}},
    )
    monkeypatch.setenv("SAFE_FEDLLM_PROBE_ARTIFACTS_DIR", str(tmp_path))
    monkeypatch.setenv("SAFE_FEDLLM_PROBE_PORT", str(free_port()))
    monkeypatch.setenv("SAFE_FEDLLM_REDIS_URL", redis_server.url)
    runtime_settings.cache_clear()
    config = CONFIG.model_copy(
        update={"store": "redis", "federation": CONFIG.federation.model_copy(update={"num_rounds": 1})}
    )
    seen = []
    try:
        [start, defended] = run_sweep(config, [(0.5, "shadow")], on_round=lambda r, d, s: seen.append(s))
    finally:
        runtime_settings.cache_clear()
        from ray import serve

        serve.shutdown()
    assert defended["probe_id"] == "tiny-flag-all" and defended["skipped_rounds"] == 1
    [summary] = seen
    assert summary.phase.value == "skipped" and set(summary.factors.values()) == {0.0}
    assert all(score is not None and score > 0.99 for score in summary.scores.values())
    assert defended["harm_preference"] == start["harm_preference"]  # the global never moved
    assert any(key.startswith(b"sim-shadow") for key in redis_client.keys("*"))


def test_audit_level_runs_through_the_audit_service_without_a_probe(ray_session, monkeypatch, free_port):
    """The audit level alone: the simulation deploys the audit service (no probe service), every update
    gets a real audit score, and a threshold every score meets flags them all, so the round is skipped."""
    from shared.config import runtime_settings

    monkeypatch.setenv("SAFE_FEDLLM_AUDIT_PORT", str(free_port()))
    monkeypatch.setenv("SAFE_FEDLLM_AUDIT_CANARIES__SIZE", "4")
    monkeypatch.setenv("SAFE_FEDLLM_AUDIT_LEVEL_THRESHOLD", "-1e9")
    runtime_settings.cache_clear()
    config = CONFIG.model_copy(update={"federation": CONFIG.federation.model_copy(update={"num_rounds": 1})})
    seen = []
    try:
        [start, audited] = run_sweep(config, [(0.5, "audit")], on_round=lambda r, d, s: seen.append(s))
        from ray import serve

        assert "audit-service" in serve.status().applications
        assert "probe-service" not in serve.status().applications
    finally:
        runtime_settings.cache_clear()
        from ray import serve

        serve.shutdown()
    [summary] = seen
    assert audited["probe_id"] is None and audited["audit_threshold"] == -1e9
    assert summary.phase.value == "skipped" and set(summary.factors.values()) == {0.0}
    scores = list(summary.scores.values())
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores) and scores[0] != scores[1]
    assert audited["harm_preference"] == start["harm_preference"]  # the global never moved
