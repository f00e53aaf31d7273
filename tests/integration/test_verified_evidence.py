"""Evidence the server verifies (#22 item 2) through the real REST API: real tiny-llama client updates (real
PEFT training), the aggregator as a separate process with its default defense (the verified level, the norm
bound, structural checks), a real redis-server and an ONNX probe.

A harmful adapter sent with a benign run's snapshots is refused (422, decision log, metric); sent with its own
last row and benign earlier rows it gets the factor its verified Δ earns, whatever the rows say; a frozen
layer is refused; global + 4·Δ is clipped to the round's median norm. The shadow level does not start
without trusted execution.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest
from safetensors.numpy import save

from research.clients.attacks import scale_snapshots, scale_update
from research.clients.population import build_population
from research.clients.trainer import ClientTrainer
from services.aggregator.norm_bound import delta_norm
from shared.config import LocalTrainingConfig, LoraSettings
from shared.features import FeatureSpec
from shared.lora import attach_lora, get_lora_state
from shared.model_zoo import load_base_model
from shared.updates import decode_lora_state
from tests.integration.test_aggregator_service import ADMIN, REPO, AggregatorProcess
from tests.toy_lora import export_toy_probe

pytestmark = pytest.mark.integration
TRAINING = LocalTrainingConfig(local_steps=5, batch_size=4, max_seq_len=64)  # the server's default task


@pytest.fixture(scope="module")
def updates(pools):
    """The round-0 global (tiny-llama's LoRA init) and four real client updates trained from it."""
    init = get_lora_state(attach_lora(load_base_model("tiny-llama").model, LoraSettings()))
    specs = build_population(pools.client, 4, 0.25, 20)  # three benign shards, one harmful
    trained = {}
    for name, spec in zip(("good0", "good1", "scaler", "evil"), specs, strict=True):
        loaded = load_base_model("tiny-llama")
        trainer = ClientTrainer(spec, loaded.model, loaded.tokenizer, LoraSettings(), TRAINING)
        trained[name] = trainer.train_round(init, round_index=0, lr=1e-3)
    return init, trained


@pytest.fixture
def aggregator(updates, redis_server, tmp_path, free_port):
    init, trained = updates
    spec = FeatureSpec.for_adapter(init, "first_B")
    harmful = spec.raw(trained["evil"].lora_state, init)
    weight = 40 * harmful / np.linalg.norm(harmful)  # the probe: the harmful update's direction
    export_toy_probe(
        tmp_path / "probes" / "toy-probe",
        weight,
        spec,
        base_model="tiny-llama",
        fingerprint=load_base_model("tiny-llama").fingerprint,  # the server checks it against the weights
        lora=LoraSettings(),
    )
    (tmp_path / "init.safetensors").write_bytes(save(init))
    env = {
        **os.environ,
        "SAFE_FEDLLM_REDIS_URL": redis_server.url,
        "SAFE_FEDLLM_PROBE_ARTIFACTS_DIR": str(tmp_path / "probes"),
        "SAFE_FEDLLM_AGGREGATOR_MODEL": "tiny-llama",
        "SAFE_FEDLLM_AGGREGATOR_INITIAL_ADAPTER": str(tmp_path / "init.safetensors"),
        "SAFE_FEDLLM_AGGREGATOR_ADMIN_TOKEN": "operator-secret",
        "SAFE_FEDLLM_AGGREGATOR_NAMESPACE": f"verified{free_port()}",
        "SAFE_FEDLLM_AGGREGATOR_FEDERATION__CLIENTS_PER_ROUND": "4",
    }
    env.pop("SAFE_FEDLLM_AGGREGATOR_DEFENSE", None)  # the default defense is under test
    process = AggregatorProcess(env, free_port())
    process.start()
    yield process, spec, env
    if process.process.poll() is None:
        process.kill()


def _submission(state: dict, rows: np.ndarray) -> dict:
    return {
        "files": {
            "adapter": ("adapter_model.safetensors", save(state)),
            "snapshots": ("snapshots.safetensors", save({"b_snapshots": rows.astype(np.float32)})),
        },
        "data": {"num_samples": "20", "batch_size": "4", "train_loss": "1.0"},
    }


def _metric(text: str, name: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith(name)]
    return float(lines[0].split()[-1]) if lines else 0.0


def test_the_default_rest_aggregator_verifies_what_clients_report(aggregator, updates):
    process, spec, _ = aggregator
    init, trained = updates
    http = httpx.Client(base_url=process.url, timeout=60)
    enroll = http.post("/v1/admin/enrollments", headers=ADMIN, json={"count": 4}).json()["tokens"]
    tokens = {}
    for cid, enrollment in zip(trained, enroll, strict=True):
        response = http.post("/v1/clients", json={"client_id": cid, "enrollment_token": enrollment})
        tokens[cid] = response.json()["token"]

    def post(cid: str, state: dict, rows: np.ndarray) -> httpx.Response:
        headers = {"x-client-id": cid, "authorization": f"Bearer {tokens[cid]}"}
        return http.post("/v1/rounds/0/updates", headers=headers, **_submission(state, rows))

    assert http.post("/v1/admin/rounds/0/open", headers=ADMIN).status_code == 200
    good0, good1, scaler, evil = (trained[c] for c in ("good0", "good1", "scaler", "evil"))

    # Forged evidence: the harmful adapter with a benign run's snapshots -> 422, logged, counted.
    forged = post("evil", evil.lora_state, good0.b_snapshots)
    assert forged.status_code == 422 and "last b_snapshots row differs" in forged.json()["detail"]
    # A frozen layer: layer 0's LoRA tensors left at the issued global -> 422 (structure).
    frozen_state = {k: (init[k] if ".layers.0." in k else v) for k, v in good1.lora_state.items()}
    frozen = post("good1", frozen_state, np.tile(spec.raw(frozen_state), (5, 1)))
    assert frozen.status_code == 422 and "Δ is exactly zero" in frozen.json()["detail"]

    # Honest clients: real training's snapshots agree with the adapter float32-exactly.
    for cid, update in (("good0", good0), ("good1", good1)):
        assert post(cid, update.lora_state, update.b_snapshots).status_code == 202, cid
    # Update scaling with consistent snapshots: accepted, then clipped at close.
    reference = spec.raw(init)
    boosted = post(
        "scaler",
        scale_update(scaler.lora_state, init, 4.0),
        scale_snapshots(scaler.b_snapshots, reference, 4.0),
    )
    assert boosted.status_code == 202
    # The harmful adapter with its own last row and a benign run's earlier rows: consistent, accepted.
    spliced_rows = np.concatenate([good0.b_snapshots[:-1], evil.b_snapshots[-1:]])
    assert post("evil", evil.lora_state, spliced_rows).status_code == 202

    closed = http.post("/v1/admin/rounds/0/close", headers=ADMIN)
    assert closed.status_code == 200, closed.text
    factors = closed.json()["factors"]
    # The verified Δ of the harmful update is the probe's direction: p = σ(40) = 1, u = ½σ(−5) at τ = 0.8;
    # the benign earlier rows it reported cannot raise that (they may only lower it).
    assert factors["evil"] <= 0.5 / (1 + math.exp(5)) * (1 + 1e-6)
    audit = http.get("/v1/admin/decisions", headers=ADMIN).json()
    refused = [(a["client_id"], a["reason"].split(":")[0]) for a in audit if a["decision"] == "refused"]
    assert refused == [("evil", "refused (snapshot_mismatch)"), ("good1", "refused (structure)")]
    closing = {a["client_id"]: a for a in audit if a["decision"] != "refused"}
    assert closing["evil"]["score"] == pytest.approx(1.0)
    norms = sorted(
        delta_norm(state, init)
        for state in (
            good0.lora_state,
            good1.lora_state,
            scale_update(scaler.lora_state, init, 4.0),
            evil.lora_state,
        )
    )
    median = (norms[1] + norms[2]) / 2
    note = closing["scaler"]["reason"]
    assert "norm bound: |delta|" in note and "(1 x the round's median)" in note
    assert float(note.split("clipped to ")[1].split()[0]) == pytest.approx(median, rel=1e-3)
    assert "verified p=1.000" in closing["evil"]["reason"]
    metrics = http.get("/metrics").text
    assert _metric(metrics, 'aggregator_refused_updates_total{check="snapshot_mismatch"}') == 1.0
    assert _metric(metrics, 'aggregator_refused_updates_total{check="structure"}') == 1.0
    new_global = decode_lora_state(http.get("/v1/admin/global/1", headers=ADMIN).content)
    # Every aggregated Δ is within the round's median norm, so the new global is too (a convex combination).
    assert delta_norm(new_global, init) <= median * (1 + 1e-5)
    assert (
        delta_norm(scale_update(scaler.lora_state, init, 4.0), init) > 2 * median
    )  # what it would have moved


def test_the_aggregator_does_not_start_with_a_probe_made_for_other_base_weights(aggregator, tmp_path):
    _, spec, env = aggregator
    stale = tmp_path / "stale-probes"
    stale_weights = "0" * 16  # e.g. a probe built before the base was re-aligned
    export_toy_probe(
        stale / "stale-probe", np.ones(spec.dim), spec, base_model="tiny-llama", fingerprint=stale_weights
    )
    command = [sys.executable, "-c", "from services.aggregator.server import build_service; build_service()"]
    result = subprocess.run(
        command,
        cwd=REPO,
        env={**env, "SAFE_FEDLLM_PROBE_ARTIFACTS_DIR": str(stale)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "no probe for base model 'tiny-llama'" in result.stderr
    assert f"base weights {load_base_model('tiny-llama').fingerprint}" in result.stderr
    assert "stale-probe (tiny-llama, base weights 0000000000000000)" in result.stderr


def test_the_shadow_level_does_not_start_without_trusted_execution(aggregator):
    _, _, env = aggregator
    command = [sys.executable, "-c", "from services.aggregator.server import build_service; build_service()"]
    shadow = {**env, "SAFE_FEDLLM_AGGREGATOR_DEFENSE": "shadow"}
    result = subprocess.run(command, cwd=REPO, env=shadow, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "only under trusted execution" in result.stderr
    assert "SAFE_FEDLLM_AGGREGATOR_TRUSTED_EXECUTION=true" in result.stderr
