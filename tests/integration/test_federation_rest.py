"""A federation over REST on real parts, with no operator: the aggregator (uvicorn subprocess, real
redis-server) with its round scheduler, the probe service's app (uvicorn subprocess, ONNX Runtime), and three
`safe-fedllm client run` subprocesses training tiny-llama with PEFT on their own JSONL files (one harmful).

One participant is SIGKILLed while a round is open and restarted from its state dir; the aggregator is
SIGKILLed between rounds and restarted. At the end every accepted update is counted exactly once, every
round aggregated, the global advanced to version 3, the harmful participant's factor is below the benign
ones', and no participant printed a row of its data.

tiny-llama has no shipped probe: the test fits one (a difference of means of the layer-0 B delta after T
steps, on rows disjoint from the participants') so the scores mean something; the shipped SmolLM2 probe is
measured in docs/results.md. The admin routes are only read (audit, round status), never used to run rounds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from safetensors.numpy import save

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
ADMIN = {"authorization": "Bearer operator-secret"}
STEPS, BATCH, LR = 3, 2, 3e-3
PARTICIPANTS = {"p0": "benign", "p1": "benign", "evil": "malicious"}


def _rows(pools, kind: str, start: int, count: int) -> list[tuple[str, str]]:
    if kind == "malicious":
        return [(p.instruction, p.harmful) for p in pools.client.harmful[start : start + count]]
    return [(x.instruction, x.response) for x in pools.client.helpful[start : start + count]]


def _fit_probe(pools, directory: Path) -> dict[str, np.ndarray]:
    """The initial adapter, and a probe along (harmful − benign) mean layer-0 B delta after T steps."""
    from probes.artifact import export_linear_probe
    from research.clients.population import ClientSpec
    from research.clients.trainer import ClientTrainer
    from shared.config import LocalTrainingConfig, LoraSettings
    from shared.features import FeatureSpec, normalise
    from shared.lora import attach_lora, get_lora_state
    from shared.model_zoo import load_base_model

    tiny = load_base_model("tiny-llama")
    init = get_lora_state(attach_lora(tiny.model, LoraSettings()))
    spec = FeatureSpec.for_adapter(init, "first_B")
    training = LocalTrainingConfig(local_steps=STEPS, batch_size=BATCH)
    means = {}
    for kind in ("benign", "malicious"):
        features = []
        for shard in range(3):  # rows 100+ : never a participant's (they hold rows 0..23)
            rows = tuple(_rows(pools, kind, 100 + 8 * shard, 8))
            base = load_base_model("tiny-llama")
            trainer = ClientTrainer(
                ClientSpec(f"fit-{kind}-{shard}", "benign", rows), base.model, base.tokenizer, LoraSettings(),
                training, seed=shard,
            )  # fmt: skip
            update = trainer.train_round(init, 0, LR, shadow=False)
            features.append(normalise(update.b_snapshots[-1:] - spec.raw(init), "l2")[0])
        means[kind] = np.mean(features, axis=0)
    direction = means["malicious"] - means["benign"]
    weight = 40 * direction / np.linalg.norm(direction)
    bias = -float(weight @ (means["malicious"] + means["benign"])) / 2
    export_linear_probe(
        directory / "tiny-fit", "tiny-fit", weight, bias, spec, base_model="tiny-llama",
        fingerprint=tiny.fingerprint,  # the aggregator checks it against the weights it loads
        lora=LoraSettings(), threshold=0.5, training_data_hash="0" * 16,
    )  # fmt: skip
    return init


class Server:
    def __init__(self, command: list[str], env: dict[str, str], port: int, health: str) -> None:
        self.command, self.env, self.port, self.health = command, env, port, health
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, cwd=REPO, env=self.env)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}{self.health}").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.command} did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class ParticipantProcess:
    def __init__(self, client_id: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.client_id, self.args, self.env, self.log = client_id, args, env, log
        self.process: subprocess.Popen | None = None

    def start(self, *extra: str) -> None:
        command = [sys.executable, "-m", "services.cli.main", "client", "run", *self.args, *extra]
        with open(self.log, "a") as out:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text()


def _wait(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def fitted_probe(pools, tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """The probe and the round-0 global, fitted once for the module's federations (read-only to them)."""
    probes = tmp_path_factory.mktemp("fitted") / "probes"
    return probes, _fit_probe(pools, probes)


@pytest.fixture
def federation(pools, fitted_probe, redis_client, redis_server, tmp_path, free_port):
    probes, init = fitted_probe
    (tmp_path / "init.safetensors").write_bytes(save(init))
    env = {**os.environ, "SAFE_FEDLLM_PROBE_ARTIFACTS_DIR": str(probes), "OMP_NUM_THREADS": "1"}
    probe_port = free_port()
    probe_service = Server(
        [
            sys.executable, "-c",
            "import uvicorn; from services.probe_service.api.app import create_app; "
            "from services.probe_service.backends import InProcessBackend; "
            "from services.probe_service.scoring import ProbeBank; "
            "from services.probe_service.settings import ProbeServiceSettings; "
            "bank = ProbeBank(ProbeServiceSettings().artifacts_dir); "
            f"uvicorn.run(create_app(bank, InProcessBackend(bank)), port={probe_port}, log_level='warning')",
        ],
        env, probe_port, "/healthz",
    )  # fmt: skip
    probe_service.start()
    settings = {
        "REDIS_URL": redis_server.url,
        "AGGREGATOR_DEFENSE": "client",
        "AGGREGATOR_PROBE_ID": "tiny-fit",
        "AGGREGATOR_PROBE_URL": probe_service.url,
        "AGGREGATOR_MODEL": "tiny-llama",
        "AGGREGATOR_INITIAL_ADAPTER": str(tmp_path / "init.safetensors"),
        "AGGREGATOR_ADMIN_TOKEN": "operator-secret",
        "AGGREGATOR_ENROLLMENT_TOKENS": json.dumps([f"enrol-{c}" for c in PARTICIPANTS]),
        "AGGREGATOR_FEDERATION__CLIENTS_PER_ROUND": "3",
        "AGGREGATOR_FEDERATION__NUM_ROUNDS": "3",
        "AGGREGATOR_FEDERATION__LR__LR_MAX": str(LR),
        "AGGREGATOR_FEDERATION__LR__LR_MIN": str(LR / 3),
        "AGGREGATOR_TRAINING__LOCAL_STEPS": str(STEPS),
        "AGGREGATOR_TRAINING__BATCH_SIZE": str(BATCH),
        "AGGREGATOR_SCHEDULER__ENABLED": "true",
        "AGGREGATOR_SCHEDULER__MIN_CLIENTS": "3",
        "AGGREGATOR_SCHEDULER__MIN_UPDATES": "2",
        "AGGREGATOR_SCHEDULER__ROUND_DEADLINE_S": "90",
        "AGGREGATOR_SCHEDULER__POLL_INTERVAL_S": "0.2",
        "AGGREGATOR_SCHEDULER__LEASE_TTL_S": "2",
    }
    aggregator_port = free_port()
    aggregator = Server(
        [
            sys.executable, "-m", "uvicorn", "--factory", "services.aggregator.server:create_server_app",
            "--port", str(aggregator_port), "--log-level", "warning",
        ],
        env | {f"SAFE_FEDLLM_{k}": v for k, v in settings.items()}, aggregator_port, "/healthz",
    )  # fmt: skip
    aggregator.start()
    participants = {}
    for index, (client_id, kind) in enumerate(PARTICIPANTS.items()):
        data = tmp_path / f"{client_id}.jsonl"
        rows = _rows(pools, kind, 8 * index, 8)
        data.write_text("".join(json.dumps({"instruction": q, "response": a}) + "\n" for q, a in rows))
        args = [
            "--server", aggregator.url, "--client-id", client_id, "--data", str(data),
            "--state-dir", str(tmp_path / f"state-{client_id}"), "--insecure-http", "--poll-interval", "0.2",
            "--until-round", "2", "--threads", "1", "--no-progress", "--seed", str(index),
        ]  # fmt: skip
        participants[client_id] = ParticipantProcess(client_id, args, env, tmp_path / f"{client_id}.log")
    yield aggregator, participants, tmp_path
    for participant in participants.values():
        if participant.process is not None and participant.process.poll() is None:
            participant.process.kill()
            participant.process.wait()
    aggregator.kill()
    probe_service.kill()


def test_three_participants_run_three_rounds_through_kills_and_a_restart(federation, pools):
    aggregator, participants, tmp_path = federation
    started = time.monotonic()
    for client_id, participant in participants.items():
        participant.start("--enrollment-token", f"enrol-{client_id}")
    http = httpx.Client(base_url=aggregator.url, timeout=30)

    def phase(round_index: int) -> str | None:
        response = http.get(f"/v1/admin/rounds/{round_index}", headers=ADMIN)  # read-only
        return response.json()["phase"] if response.status_code == 200 else None

    def submitted(round_index: int) -> set[str]:
        response = http.get(f"/v1/admin/rounds/{round_index}", headers=ADMIN)
        return {u["client_id"] for u in response.json()["updates"]} if response.status_code == 200 else set()

    # p1 is SIGKILLed while round 1 is open and before the server has its update; it restarts from its
    # state dir (credentials kept, no enrollment token) and the round waits for it (every sampled client).
    _wait(lambda: phase(1) is not None, 100, "round 1 to open")
    victim = participants["p1"]
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait()
    assert "p1" not in submitted(1) or "round 1: accepted" in victim.output()
    victim.start()

    # The aggregator is killed between rounds 1 and 2 and restarted; the scheduler's lease passes on.
    _wait(lambda: phase(1) == "aggregated", 100, "round 1 to close")
    aggregator.kill()
    aggregator.start()

    for participant in participants.values():
        assert participant.process.wait(timeout=120) == 0, participant.output()
    elapsed = time.monotonic() - started

    assert [phase(r) for r in range(3)] == ["aggregated"] * 3
    assert phase(3) is None  # max_rounds (federation.num_rounds) = 3
    audit = http.get("/v1/admin/decisions", headers=ADMIN).json()
    counted = sorted((a["round_index"], a["client_id"]) for a in audit)
    assert counted == sorted((r, c) for r in range(3) for c in PARTICIPANTS)  # each update exactly once
    factors = {(a["round_index"], a["client_id"]): a["factor"] for a in audit}
    for r in range(3):
        assert factors[(r, "evil")] < min(factors[(r, "p0")], factors[(r, "p1")]), factors
    head = http.get("/v1/admin/global/3", headers=ADMIN)
    assert head.status_code == 200 and http.get("/v1/admin/global/4", headers=ADMIN).status_code == 404

    outputs = {c: p.output() for c, p in participants.items()}
    for client_id, output in outputs.items():
        assert f"enrolled as {client_id}" in output
        assert "round 2: accepted" in output and "round 2 closed: done" in output
        data = (tmp_path / f"{client_id}.jsonl").read_text().splitlines()
        for line in data:  # no row of its data in its log, not even a prefix of one
            row = json.loads(line)
            assert row["instruction"][:40] not in output and row["response"][:40] not in output
    assert outputs["p1"].count("enrolled as p1") == 1  # the restart reused the 0600 credentials
    assert oct((tmp_path / "state-p1" / "credentials.json").stat().st_mode & 0o777) == "0o600"
    print(f"federation of 3 participants, 3 rounds: {elapsed:.1f}s")


def test_the_same_federation_through_ray_actors(federation, pools):
    """The cluster job's path (`safe-fedllm client federate`): each participant a Ray actor, over REST."""
    import ray

    from research.clients.population import ClientSpec
    from research.participant_cluster import plan_federation, run_federation

    aggregator, _, tmp_path = federation
    specs = [
        ClientSpec(client_id, kind, tuple(_rows(pools, kind, 8 * index, 8)))  # type: ignore[arg-type]
        for index, (client_id, kind) in enumerate(PARTICIPANTS.items())
    ]
    members = plan_federation(specs, [f"enrol-{c}" for c in PARTICIPANTS])
    common = {"server": aggregator.url, "insecure_http": True, "poll_interval_s": 0.2, "until_round": 2}
    ray.init(num_cpus=3, log_to_driver=False, include_dashboard=False, configure_logging=False)
    try:
        results = run_federation(members, common, tmp_path / "actors", cpus_per_client=1, torch_threads=1)
    finally:
        ray.shutdown()
    assert sorted((r["client_id"], r["rounds"]) for r in results) == [("evil", 3), ("p0", 3), ("p1", 3)]
    http = httpx.Client(base_url=aggregator.url, timeout=30)
    audit = http.get("/v1/admin/decisions", headers=ADMIN).json()
    assert sorted((a["round_index"], a["client_id"]) for a in audit) == sorted(
        (r, c) for r in range(3) for c in PARTICIPANTS
    )
    factors = {(a["round_index"], a["client_id"]): a["factor"] for a in audit}
    assert all(factors[(r, "evil")] < min(factors[(r, "p0")], factors[(r, "p1")]) for r in range(3)), factors
    for result in results:
        assert [line.split(":")[0] for line in result["lines"] if "accepted" in line] == [
            "round 0",
            "round 1",
            "round 2",
        ]


def test_sigterm_stops_a_participant_cleanly_while_the_server_is_unreachable(tmp_path, free_port):
    """Network trouble is retried (with backoff) until SIGTERM, which ends the program with exit 0."""
    data = tmp_path / "rows.jsonl"
    data.write_text('{"instruction": "q", "response": "a"}\n')
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    credentials = {"server": f"http://127.0.0.1:{free_port()}", "client_id": "c1", "token": "t"}
    (state / "credentials.json").write_text(json.dumps(credentials))
    (state / "credentials.json").chmod(0o600)
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "client", "run", "--server", credentials["server"],
         "--client-id", "c1", "--data", str(data), "--state-dir", str(state), "--insecure-http",
         "--max-backoff", "0.2"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    lines = []
    for line in process.stdout:  # wait until it has retried twice
        lines.append(line)
        if "retrying in" in line and "attempt 2" in line:
            break
    process.send_signal(signal.SIGTERM)
    output = "".join(lines) + process.stdout.read()
    assert process.wait(timeout=30) == 0, output
    assert "task: ConnectError; retrying in" in output and "stopped" in output
