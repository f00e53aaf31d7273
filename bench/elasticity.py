"""Probe elasticity at the chart's defaults: HTTP load through Serve's proxy on 127.0.0.1 makes the scoring
replicas (ProbeScorer) grow, and they shrink once the load stops.

The probe service runs as the chart deploys it (helm/safe-fedllm/values.yaml: `scoreInIngress: false`, both
deployments' autoscaling, CPUs per replica, batching, max ongoing requests), on a local Ray whose logical CPUs
are those of the chart's most worker pods that a 2-core machine can pretend to have. Closed-loop clients POST
first-layer snapshot batches (SmolLM2's q/v r=8 layout, a planted toy probe) for --load-s seconds, then stop;
a sampler records the running replicas of both deployments and the requests answered, every second.

    python bench/elasticity.py --output docs/results/elasticity.json --plot docs/results/elasticity.png

Bounded: ~--load-s + --cool-s + ~30 s start-up; 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml
from safetensors.numpy import save as save_safetensors

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from probes.artifact import export_linear_probe  # noqa: E402
from shared.config import LoraSettings  # noqa: E402
from shared.features import FeatureSpec  # noqa: E402

PROBE_ID = "elastic-smollm2"
LAYERS, HIDDEN, KV, R = 30, 576, 192, 8  # SmolLM2-135M, q/v r=8


def chart_probe_values() -> dict:
    return yaml.safe_load((REPO / "helm" / "safe-fedllm" / "values.yaml").read_text())["probeService"]


def make_registry(root: Path) -> FeatureSpec:
    rng = np.random.default_rng(0)
    state = {}
    for layer in range(LAYERS):
        for module, out in (("q_proj", HIDDEN), ("v_proj", KV)):
            key = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            state[f"{key}.lora_A.weight"] = rng.normal(size=(R, HIDDEN)).astype(np.float32)
            state[f"{key}.lora_B.weight"] = np.zeros((out, R), np.float32)
    spec = FeatureSpec.for_adapter(state, "first_B")
    export_linear_probe(
        root / PROBE_ID,
        PROBE_ID,
        rng.normal(size=spec.dim).astype(np.float32),
        0.0,
        spec,
        base_model=PROBE_ID,
        fingerprint="0" * 16,
        lora=LoraSettings(),
        threshold=0.8,
        training_data_hash="0" * 16,
    )
    return spec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def autoscaling(values: dict) -> dict:
    keys = {
        "minReplicas": "min_replicas",
        "maxReplicas": "max_replicas",
        "targetOngoingRequests": "target_ongoing_requests",
        "upscaleDelayS": "upscale_delay_s",
        "downscaleDelayS": "downscale_delay_s",
        "metricsIntervalS": "metrics_interval_s",
        "lookBackPeriodS": "look_back_period_s",
    }
    return {python: values[chart] for chart, python in keys.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--load-s", type=float, default=45.0, help="Seconds of load.")
    parser.add_argument("--cool-s", type=float, default=60.0, help="Seconds observed after the load.")
    parser.add_argument("--clients", type=int, default=24, help="Concurrent closed-loop HTTP clients.")
    parser.add_argument("--rows", type=int, default=16, help="Snapshot rows per request.")
    parser.add_argument("--ray-cpus", type=int, default=4, help="Logical CPUs of the local Ray.")
    parser.add_argument("--output", type=Path, default=REPO / "docs/results/elasticity.json")
    parser.add_argument("--plot", type=Path, default=REPO / "docs/results/elasticity.png")
    args = parser.parse_args()

    from ray import serve

    from services.probe_service.deployment import replica_counts, start_probe_service
    from services.probe_service.settings import AutoscalingSettings, ProbeServiceSettings
    from services.ray_runtime import ensure_ray

    chart = chart_probe_values()
    registry = Path(tempfile.mkdtemp(prefix="elasticity-"))
    spec = make_registry(registry)
    settings = ProbeServiceSettings(
        artifacts_dir=registry,
        host="127.0.0.1",
        port=free_port(),
        app_name="probe-elasticity",
        score_in_ingress=chart["scoreInIngress"],
        max_ongoing_requests=chart["maxOngoingRequests"],
        batch_max_size=chart["batch"]["maxSize"],
        batch_wait_timeout_s=chart["batch"]["waitTimeoutS"],
        ingress_num_cpus=chart["ingress"]["numCpus"],
        scorer_num_cpus=chart["scorer"]["numCpus"],
        ingress_autoscaling=AutoscalingSettings(**autoscaling(chart["ingress"]["autoscaling"])),
        scorer_autoscaling=AutoscalingSettings(**autoscaling(chart["scorer"]["autoscaling"])),
    )
    ensure_ray(num_cpus=args.ray_cpus)
    url = start_probe_service(settings)
    body = save_safetensors(
        {"snapshots": np.random.default_rng(1).normal(size=(args.rows, spec.dim)).astype(np.float32)}
    )
    timeline: list[dict] = []
    answered = {"ok": 0, "error": 0}

    async def run() -> None:
        limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            headers = {"content-type": "application/octet-stream"}
            params = {"probe_id": PROBE_ID}
            warm = await client.post("/v1/score/batch", content=body, headers=headers, params=params)
            warm.raise_for_status()
            begin = time.perf_counter()
            stop = begin + args.load_s

            async def worker() -> None:
                while time.perf_counter() < stop:
                    response = await client.post(
                        "/v1/score/batch", content=body, headers=headers, params=params
                    )
                    answered["ok" if response.status_code == 200 else "error"] += 1

            async def sampler() -> None:
                last = 0
                while time.perf_counter() < stop + args.cool_s:
                    counts = await asyncio.to_thread(replica_counts, settings)
                    now = time.perf_counter()
                    timeline.append(
                        {
                            "t_s": round(now - begin, 1),
                            "load": now < stop,
                            "scorer_replicas": counts.get("ProbeScorer", 0),
                            "ingress_replicas": counts.get("ProbeIngress", 0),
                            "answered": answered["ok"] - last,
                        }
                    )
                    last = answered["ok"]
                    await asyncio.sleep(1.0)

            await asyncio.gather(sampler(), *(worker() for _ in range(args.clients)))

    asyncio.run(run())
    serve.delete(settings.app_name)
    serve.shutdown()
    loaded = [p for p in timeline if p["load"]]
    result = {
        "what": "ProbeScorer replicas under HTTP load at the chart's default probe settings, then idle",
        "command": "python bench/elasticity.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "ray_logical_cpus": args.ray_cpus,
        },
        "load": (
            f"{args.clients} closed-loop HTTP clients POST /v1/score/batch, {args.rows} x {spec.dim} "
            "snapshot rows (safetensors) each, through Serve's proxy on 127.0.0.1"
        ),
        "load_s": args.load_s,
        "cool_s": args.cool_s,
        "score_in_ingress": settings.score_in_ingress,
        "scorer_autoscaling": settings.scorer_autoscaling.model_dump(),
        "ingress_autoscaling": settings.ingress_autoscaling.model_dump(),
        "requests_ok": answered["ok"],
        "requests_failed": answered["error"],
        "scorer_replicas": {
            "start": timeline[0]["scorer_replicas"],
            "peak_under_load": max(p["scorer_replicas"] for p in loaded),
            "end": timeline[-1]["scorer_replicas"],
        },
        "timeline": timeline,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.plot)
    print(json.dumps({k: v for k, v in result.items() if k != "timeline"}, indent=1))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = result["timeline"]
    t = [p["t_s"] for p in timeline]
    fig, replicas = plt.subplots(figsize=(8, 4))
    replicas.step(t, [p["scorer_replicas"] for p in timeline], where="post", label="ProbeScorer replicas")
    replicas.step(t, [p["ingress_replicas"] for p in timeline], where="post", label="ProbeIngress replicas")
    replicas.axvspan(0, result["load_s"], color="0.9", label="load")
    replicas.set_xlabel("seconds")
    replicas.set_ylabel("running replicas")
    replicas.set_ylim(0, result["scorer_autoscaling"]["max_replicas"] + 1)
    rate = replicas.twinx()
    rate.plot(
        t, [p["answered"] for p in timeline], color="tab:green", alpha=0.5, label="requests answered / s"
    )
    rate.set_ylabel("requests answered per second")
    lines = replicas.get_legend_handles_labels()
    extra = rate.get_legend_handles_labels()
    replicas.legend(lines[0] + extra[0], lines[1] + extra[1], loc="upper right", fontsize=8)
    replicas.set_title("Probe service elasticity at the chart's defaults (scoreInIngress: false)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
