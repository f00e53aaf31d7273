"""REST latency and throughput with HTTP scored on the ingress replica vs forwarded to ProbeScorer.

    FUSED=1 python bench/ingress_scoring_comparison.py; FUSED=0 python bench/ingress_scoring_comparison.py

Prints one line per (body, concurrency); `score_in_ingress` is the setting compared.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray
from ray import serve

from bench.probe_service_bench import free_port, http_bodies, make_registry, rest
from services.probe_service.deployment import start_probe_service
from services.probe_service.settings import AutoscalingSettings, ProbeServiceSettings


def main() -> None:
    registry = Path(tempfile.mkdtemp(prefix="probe-bench-"))
    specs = make_registry(registry)
    fixed = AutoscalingSettings(min_replicas=1, max_replicas=1)
    in_ingress = os.environ.get("FUSED", "1") == "1"
    settings = ProbeServiceSettings(
        artifacts_dir=registry,
        port=free_port(),
        scorer_autoscaling=fixed,
        ingress_autoscaling=fixed,
        score_in_ingress=in_ingress,
    )
    ray.init(num_cpus=4, log_to_driver=False, include_dashboard=False, configure_logging=False)
    url = start_probe_service(settings)
    bodies = http_bodies("smollm2", specs["smollm2"])
    for name in ("snapshot_single", "adapter_single", "snapshot_batch"):
        for concurrency in (1, 8):
            stats = asyncio.run(rest(url, bodies[name], {"probe_id": "bench-smollm2"}, concurrency, 4.0))
            label = "ingress" if in_ingress else "forwarded"
            print(label, name, concurrency, {k: round(v, 1) for k, v in stats.items()}, flush=True)
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
