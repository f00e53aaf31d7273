"""Both services as real HTTP servers in this process (uvicorn threads), for the hostile-input tests.

A planted linear probe over a small q/v r=2 adapter layout, registered for base model `smollm2-135m` (so
the hub id `HuggingFaceTB/SmolLM2-135M-Instruct` must find it); the aggregator on a real redis-server.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import FastAPI

from services.aggregator.service import AggregatorService
from services.aggregator.settings import AggregatorSettings
from services.aggregator.state import RedisStateStore
from services.probe_service.api.app import create_app as create_probe_app
from services.probe_service.backends import InProcessBackend
from services.probe_service.scoring import ProbeBank
from services.probe_service.settings import ProbeServiceSettings
from shared.config import LocalTrainingConfig, LoraSettings
from shared.features import FeatureSpec
from tests.toy_lora import export_toy_probe, toy_adapter

PROBE_ID = "toy-qv-r2"
ADMIN_TOKEN = "operator-secret"


def adapter(value: float = 0.0, modules: tuple[str, ...] = ("q_proj", "v_proj")) -> dict[str, np.ndarray]:
    """The toy layout with every projection's output 3 (a narrower q than tests/toy_lora's default)."""
    return toy_adapter(value, outputs=dict.fromkeys(modules, 3))


def export_probe(root: Path) -> FeatureSpec:
    spec = FeatureSpec.for_adapter(adapter(), "first_B")
    export_toy_probe(
        root / PROBE_ID,
        np.ones(spec.dim, np.float32) * 4,
        spec,
        base_model="smollm2-135m",
        fingerprint="0" * 16,
    )
    return spec


def probe_app(root: Path, **settings: object) -> FastAPI:
    bank = ProbeBank(root)
    return create_probe_app(
        bank, InProcessBackend(bank), ProbeServiceSettings(artifacts_dir=root, **settings)
    )


def aggregator_settings(**overrides: object) -> AggregatorSettings:
    values: dict = {
        "defense": "shadow",
        "trusted_execution": True,  # the shadow level's branch; these tests probe the API, not the level
        "model": "smollm2-135m",
        "lora": LoraSettings(r=2),
        "admin_token": ADMIN_TOKEN,
        "training": LocalTrainingConfig(local_steps=3, batch_size=2, shadow_lr=5e-5),
        "max_update_bytes": 1024 * 1024,
        **overrides,
    }
    return AggregatorSettings(**values)


def aggregator_service(root: Path, redis_client, settings: AggregatorSettings) -> AggregatorService:  # type: ignore[no-untyped-def]
    bank = ProbeBank(root)
    manifest = bank.manifest(PROBE_ID)
    store = RedisStateStore(redis_client, namespace=f"fuzz{time.monotonic_ns()}")
    return AggregatorService(
        store, settings, adapter(), InProcessBackend(bank), PROBE_ID, manifest.feature_spec
    )


class ServerThread:
    """uvicorn serving an app on a free loopback port, in a daemon thread."""

    def __init__(self, app: FastAPI, port: int) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
        self.server = uvicorn.Server(config)
        self.url = f"http://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            time.sleep(0.02)
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
