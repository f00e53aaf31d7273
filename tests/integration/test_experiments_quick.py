"""Every experiment's `--quick` variant end to end: the real command, real Ray clients training tiny-llama,
the probe service on Serve scoring with a tiny probe built by the project's pipeline, real ONNX Runtime.

Each checks its qualitative effect from its own run, never against a stored number."""

import json
import sys
from unittest.mock import patch

import pytest

ray = pytest.importorskip("ray")

from typer.testing import CliRunner  # noqa: E402

from services.cli.main import app  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROW_FIELDS = (
    "defense",
    "malicious_ratio",
    "seed",
    "harmless_rate",
    "harmless_rate_ci95",
    "harm_preference",
    "harm_preference_ci95",
    "over_refusal",
    "over_refusal_ci95",
    "benign_loss",
    "round_seconds",
    "model",
)


@pytest.fixture(scope="module")
def quick(tmp_path_factory, monkeypatch_module, free_port):
    """One Ray session and one tiny probe registry for the module; the probe service on a free port."""
    from shared.config import runtime_settings

    root = tmp_path_factory.mktemp("experiments")
    monkeypatch_module.setenv("SAFE_FEDLLM_PROBE_PORT", str(free_port()))
    # --quick points the probe registry at its tiny probe; this restores the variable afterwards
    monkeypatch_module.setenv("SAFE_FEDLLM_PROBE_ARTIFACTS_DIR", str(root / "probes"))
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False, configure_logging=False)
    yield root
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    runtime_settings.cache_clear()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def run(name: str, root, *extra: str) -> dict:
    output = root / f"{name}.json"
    # one cache for the module: E4 and E6 reuse E3's clean FedAvg, as the committed suite does
    args = ["experiment", "--cache-dir", str(root / "cache"), name, "--quick", "--no-progress"]
    args += ["--probe-registry", str(root / "probes")]
    argv = [*args, "--output", str(output), *extra]
    with patch.object(sys, "argv", ["safe-fedllm", *argv]):  # what the result records as its command
        result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(output.read_text())


def test_e3_defended_run_is_closer_to_clean_than_attacked_fedavg_and_resumes(quick):
    result = run("e3_main", quick)
    rows = result["rows"]
    assert result["command"].startswith("safe-fedllm experiment --cache-dir ")
    assert " e3_main --quick" in result["command"]
    assert [(r["defense"], r["malicious_ratio"]) for r in rows] == [
        ("none (start model)", 0.0),
        ("fedavg", 0.0),
        ("fedavg", 0.5),
        ("shadow", 0.5),
    ]
    for row in rows:
        assert all(field in row for field in ROW_FIELDS), sorted(row)
        assert row["model"] == "tiny-llama" and row["seed"] == 7
    shadow = rows[3]
    assert [s["round"] for s in shadow["round_summaries"]] == [0, 1]
    assert all(set(s["factors"]) == set(shadow["clients"]) for s in shadow["round_summaries"])
    # The attack is real here, and the shadow level keeps the global nearer the clean one than FedAvg does.
    assert rows[2]["harm_preference"] > rows[1]["harm_preference"]
    assert result["checks"]["seed=7 ratio=0.5 defense=shadow"] is True
    assert (quick / "e3_main_factors.png").stat().st_size > 0
    assert (quick / "e3_main_harmless.png").stat().st_size > 0
    again = run("e3_main", quick)  # every configuration finished: nothing is re-run
    assert [r["configuration_seconds"] for r in again["rows"]] == [r["configuration_seconds"] for r in rows]
    # Started over, every federation runs again, but no client trains and no adapter is evaluated twice:
    # the cache gives the same rows (the aggregator and the probe service do run again).
    redone = run("e3_main", quick, "--fresh")["rows"]
    metrics = ("harmless_rate", "harm_preference", "over_refusal", "benign_loss", "clients")
    assert [{k: r.get(k) for k in metrics} for r in redone] == [{k: r.get(k) for k in metrics} for r in rows]
    assert all(r["training_cache"]["trained"] == 0 for r in redone[1:])
    assert redone[3]["training_cache"]["shadow_reused"] == rows[3]["training_cache"]["shadow_trained"] > 0
    assert [s["factors"] for s in redone[3]["round_summaries"]] == [
        s["factors"] for s in shadow["round_summaries"]
    ]


def test_e4_fedavg_degrades_with_the_ratio_and_the_level_holds_closer(quick):
    result = run("e4_ratio", quick)
    checks = result["checks"]
    assert checks["seed=7 fedavg harmed at the highest ratio"] is True
    assert checks["seed=7 ratio=0.75 defense=shadow"] is True
    assert (quick / "e4_ratio_ratio.png").stat().st_size > 0


def test_e5_server_cost_grows_with_clients(quick):
    result = run("e5_overhead", quick)
    ran = [r for r in result["rows"] if r["status"] == "ran"]
    assert {r["method"] for r in ran} == {"step", "client", "shadow", "evidence", "krum", "bulyan", "flame"}
    assert all(result["checks"].values()) and len(result["checks"]) == 7
    assert {r["clients"] for r in ran if r["kind"] == "probe level"} == {10, 100, 1000}
    assert (quick / "e5_overhead.png").stat().st_size > 0


def test_e6_adaptive_attacks_run_through_the_client_path_and_still_harm(quick):
    result = run("e6_adaptive", quick)
    outcomes = result["outcomes"]
    attacks = {o["attack"] for o in outcomes}
    assert attacks == {"freeze_probe_layer", "probe_penalty (lambda 1)"}
    assert {o["defense"] for o in outcomes} == {"fedavg", "shadow"}
    assert set(result["checks"]) == {f"{a} still harms under fedavg" for a in attacks}
    # Training on harmful data against the published probe still moves the model towards harm. Freezing
    # layer 0 leaves tiny-llama only one of its two layers, and that attack may not harm: a finding the
    # result records, not a failure.
    assert result["checks"]["probe_penalty (lambda 1) still harms under fedavg"] is True
    shadow = [o for o in outcomes if o["defense"] == "shadow"]
    assert all(o["malicious_mean_factor"] is not None for o in shadow)


def test_e7_redteam_the_verified_default_refuses_forged_evidence_and_frozen_layers(quick):
    result = run("e7_redteam", quick)
    cells = {(o["attack"], o["defense"]): o for o in result["outcomes"]}
    attacks = ["none", "forged_snapshots", "splice", "freeze_layer (layer 1)"]
    assert set(cells) == {(a, d) for a in attacks for d in ("fedavg", "verified")}
    malicious = 2  # tiny-llama quick: 4 clients at 50%
    # forged snapshots and a frozen layer never reach the verified aggregate; FedAvg checks nothing
    assert cells[("forged_snapshots", "verified")]["refused_malicious"] == malicious
    assert cells[("freeze_layer (layer 1)", "verified")]["refused_malicious"] == malicious
    assert all(cells[(a, "fedavg")]["refused_malicious"] == 0 for a in attacks)
    # a splice agrees with its snapshots: it passes verification and is left to the probe
    assert cells[("splice", "verified")]["refused_malicious"] == 0
    assert result["settings"]["calibration"]["norm_bound"] > 0
    assert set(result["checks"]) == {f"{a}: the default holds (#22 target)" for a in attacks}
    assert "| forged_snapshots |" in result["table"]
