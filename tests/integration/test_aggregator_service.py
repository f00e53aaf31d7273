"""The aggregator as a separate process over real HTTP, with a real redis-server (AOF) and ONNX probe.

Remote clients register, fetch the task, download the global adapter and submit; the aggregator process is
SIGKILLed mid-round after some updates were accepted, restarted, and the round completes with every
accepted update counted exactly once; the shadow level drops the planted malicious client.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from safetensors.numpy import save

from shared.features import FeatureSpec
from shared.updates import decode_lora_state
from tests.toy_lora import export_toy_probe, toy_adapter

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
ADMIN = {"authorization": "Bearer operator-secret"}


class AggregatorProcess:
    def __init__(self, env: dict[str, str], port: int) -> None:
        self.port, self.env, self.process = port, env, None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "services.aggregator.server:create_server_app",
        ]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port), "--log-level", "warning"], cwd=REPO, env=self.env
        )
        for _ in range(300):
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("aggregator did not start")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def aggregator(redis_client, redis_server, tmp_path, free_port):
    spec = FeatureSpec.for_adapter(toy_adapter(0.0), "first_B")
    weight = np.ones(spec.dim, np.float32) * 4  # B along +1 is malicious, along -1 benign
    export_toy_probe(tmp_path / "probes" / "toy-probe", weight, spec, fingerprint="0" * 16)
    (tmp_path / "init.safetensors").write_bytes(save(toy_adapter(0.0)))
    env = {
        **os.environ,
        "SAFE_FEDLLM_REDIS_URL": redis_server.url,
        "SAFE_FEDLLM_PROBE_ARTIFACTS_DIR": str(tmp_path / "probes"),
        "SAFE_FEDLLM_AGGREGATOR_DEFENSE": "shadow",
        "SAFE_FEDLLM_AGGREGATOR_TRUSTED_EXECUTION": "true",  # the planted clients stand for our own actors
        "SAFE_FEDLLM_AGGREGATOR_MODEL": "toy-model",
        "SAFE_FEDLLM_AGGREGATOR_BASE_FINGERPRINT": "0" * 16,  # the toy model has no weights to load
        "SAFE_FEDLLM_AGGREGATOR_LORA__R": "2",
        "SAFE_FEDLLM_AGGREGATOR_INITIAL_ADAPTER": str(tmp_path / "init.safetensors"),
        "SAFE_FEDLLM_AGGREGATOR_ADMIN_TOKEN": "operator-secret",
        "SAFE_FEDLLM_AGGREGATOR_FEDERATION__CLIENTS_PER_ROUND": "4",
    }
    process = AggregatorProcess(env, free_port())
    process.start()
    yield process, spec
    if process.process.poll() is None:
        process.kill()


def _submission(value: float, dim: int, steps: int = 5, num_samples: int = 16) -> dict:
    snapshots = {
        "b_snapshots": np.full((steps, dim), value, np.float32),
        "shadow_snapshots": np.full((steps, dim), value, np.float32),
    }
    return {
        "files": {
            "adapter": ("adapter_model.safetensors", save(toy_adapter(value))),
            "snapshots": ("snapshots.safetensors", save(snapshots)),
        },
        "data": {"num_samples": str(num_samples), "batch_size": "4", "train_loss": "1.5"},
    }


def test_remote_clients_a_crash_mid_round_and_the_shadow_level(aggregator):
    process, spec = aggregator
    http = httpx.Client(base_url=process.url, timeout=30)
    tokens = {}
    assert http.post("/v1/clients", json={"client_id": "c0"}).status_code == 401  # no enrollment token
    enroll = http.post("/v1/admin/enrollments", headers=ADMIN, json={"count": 5}).json()["tokens"]
    for cid, enrollment in zip(("c0", "c1", "c2", "evil"), enroll, strict=False):
        response = http.post("/v1/clients", json={"client_id": cid, "enrollment_token": enrollment})
        assert response.status_code == 201, response.text
        tokens[cid] = response.json()["token"]
    spent = http.post("/v1/clients", json={"client_id": "c9", "enrollment_token": enroll[0]})
    assert spent.status_code == 403 and "already used" in spent.json()["detail"]
    taken = http.post("/v1/clients", json={"client_id": "c0", "enrollment_token": enroll[4]})
    assert taken.status_code == 409

    def auth(cid: str, token: str | None = None) -> dict:
        return {"x-client-id": cid, "authorization": f"Bearer {token or tokens[cid]}"}

    opened = http.post("/v1/admin/rounds/0/open", headers=ADMIN)
    assert opened.status_code == 200 and sorted(opened.json()["sampled"]) == ["c0", "c1", "c2", "evil"]
    task = http.get("/v1/task", headers=auth("c1")).json()
    assert task["sampled"] and task["round_index"] == 0 and task["global_version"] == 0
    assert (task["local_steps"], task["batch_size"], task["max_num_samples"]) == (5, 4, 20)
    blob = http.get("/v1/global/0", headers=auth("c1")).content
    np.testing.assert_array_equal(decode_lora_state(blob)[spec.keys[0]], 0.0)

    values = {"c0": -0.5, "c1": -0.4, "c2": -0.6, "evil": 0.7}
    first = http.post("/v1/rounds/0/updates", headers=auth("c0"), **_submission(values["c0"], spec.dim))
    assert first.status_code == 202 and not first.json()["duplicate"]
    again = http.post("/v1/rounds/0/updates", headers=auth("c0"), **_submission(values["c0"], spec.dim))
    assert again.json() == {"update_id": first.json()["update_id"], "duplicate": True}
    accepted_evil = http.post("/v1/rounds/0/updates", headers=auth("evil"), **_submission(0.7, spec.dim))
    assert accepted_evil.status_code == 202

    # bad requests: another client's token, no token, wrong round, NaN, wrong snapshot width
    assert (
        http.post(
            "/v1/rounds/0/updates", headers=auth("c1", tokens["c2"]), **_submission(-0.4, spec.dim)
        ).status_code
        == 403
    )
    assert http.get("/v1/task", headers={"x-client-id": "c1"}).status_code == 401
    assert (
        http.post("/v1/rounds/3/updates", headers=auth("c1"), **_submission(-0.4, spec.dim)).status_code
        == 409
    )
    nan = _submission(-0.4, spec.dim)
    nan["files"]["adapter"] = (
        "a",
        save({**toy_adapter(-0.4), spec.keys[0]: np.full((6, 2), np.nan, np.float32)}),
    )
    bad = http.post("/v1/rounds/0/updates", headers=auth("c1"), **nan)
    assert bad.status_code == 422 and "NaN" in bad.json()["detail"]
    narrow = http.post("/v1/rounds/0/updates", headers=auth("c1"), **_submission(-0.4, spec.dim - 1))
    assert narrow.status_code == 422 and "expected [steps, 18]" in narrow.json()["detail"]
    # the weight capture of issue 10: 10^15 claimed samples, and snapshot rows that are not the task's T
    greedy = http.post("/v1/rounds/0/updates", headers=auth("c1"), **_submission(-0.4, spec.dim, 5, 10**15))
    assert (
        greedy.status_code == 422 and "num_samples 1000000000000000 > the task's subset of 20" in greedy.text
    )
    long = http.post("/v1/rounds/0/updates", headers=auth("c1"), **_submission(-0.4, spec.dim, steps=50))
    assert long.status_code == 422 and "50 rows, the task has 5 local steps" in long.text
    assert http.get("/v1/admin/trust", headers={"authorization": "Bearer wrong"}).status_code == 403

    process.kill()  # mid-round, two updates accepted
    process.start()
    for cid in ("c1", "c2"):
        response = http.post("/v1/rounds/0/updates", headers=auth(cid), **_submission(values[cid], spec.dim))
        assert response.status_code == 202
    status = http.get("/v1/admin/rounds/0", headers=ADMIN).json()
    assert status["phase"] == "open" and len(status["updates"]) == 4 and status["missing"] == []

    closed = http.post("/v1/admin/rounds/0/close", headers=ADMIN)
    assert closed.status_code == 200, closed.text
    summary = closed.json()
    assert summary["phase"] == "aggregated"
    assert summary["factors"]["evil"] == 0.0 and summary["weights"]["evil"] == 0.0
    assert all(summary["factors"][c] == 1.0 for c in ("c0", "c1", "c2"))
    audit = http.get("/v1/admin/decisions", headers=ADMIN).json()
    assert sorted(a["client_id"] for a in audit) == ["c0", "c1", "c2", "evil"]  # each counted once
    new_global = decode_lora_state(http.get("/v1/admin/global/1", headers=ADMIN).content)
    np.testing.assert_allclose(new_global[spec.keys[0]], np.mean([-0.5, -0.4, -0.6]), atol=1e-6)
    assert http.post("/v1/admin/rounds/0/close", headers=ADMIN).status_code == 409
    late = http.post("/v1/rounds/0/updates", headers=auth("c1"), **_submission(-0.45, spec.dim))
    assert late.status_code == 409
    # a retry of c1's accepted update after the close (its answer lost) learns that it is in
    retry = http.post("/v1/rounds/0/updates", headers=auth("c1"), **_submission(-0.4, spec.dim))
    assert retry.status_code == 202 and retry.json()["duplicate"] is True, retry.text
