"""In-process apps for the per-router API tests (fixtures in conftest.py): the aggregator over an in-memory
store and the probe service over a planted ONNX probe with the in-process backend, both called through
Starlette's TestClient (no socket; the real-HTTP tests are in tests/integration)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from safetensors.numpy import save

from services.aggregator.api.app import create_app as create_aggregator_app
from services.aggregator.service import AggregatorService
from services.aggregator.settings import AggregatorSettings, FederationConfig
from services.aggregator.state import InMemoryStateStore
from services.probe_service.api.app import create_app as create_probe_app
from services.probe_service.backends import InProcessBackend
from services.probe_service.scoring import ProbeBank
from shared.features import FeatureSpec
from tests.toy_lora import export_toy_probe, toy_adapter

ADMIN_TOKEN = "operator-secret"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def adapter(b_value: float = 0.0) -> dict[str, np.ndarray]:
    """The toy two-layer q/v LoRA adapter (r = 2): A fixed, every B entry `b_value`."""
    return toy_adapter(b_value)


@dataclass
class Aggregator:
    client: TestClient
    service: AggregatorService
    store: InMemoryStateStore

    def register(self, client_id: str) -> dict[str, str]:
        """Register through the API with a minted token; the headers the client then sends."""
        [token] = self.service.registrar.issue(1, client_id)
        answer = self.client.post("/v1/clients", json={"client_id": client_id, "enrollment_token": token})
        assert answer.status_code == 201, answer.text
        return {"x-client-id": client_id, "authorization": f"Bearer {answer.json()['token']}"}


def aggregator() -> Iterator[Aggregator]:
    settings = AggregatorSettings(
        defense="fedavg",
        admin_token=ADMIN_TOKEN,
        federation=FederationConfig(num_rounds=2, clients_per_round=2),
    )
    store = InMemoryStateStore()
    service = AggregatorService(store, settings, adapter(0.0))
    with TestClient(create_aggregator_app(service)) as client:
        yield Aggregator(client, service, store)


def submission(b_value: float, num_samples: int = 20, batch_size: int = 4) -> dict:
    """The multipart parts of a submission: the adapter, n_i and b (T = 5, b = 4: at most 20 samples)."""
    return {
        "files": {"adapter": ("adapter_model.safetensors", save(adapter(b_value)))},
        "data": {"num_samples": str(num_samples), "batch_size": str(batch_size)},
    }


@dataclass
class ProbeApp:
    client: TestClient
    probe_id: str
    spec: FeatureSpec
    weight: np.ndarray


def probe_app(tmp_path: Path) -> Iterator[ProbeApp]:
    spec = FeatureSpec.for_adapter(adapter(), "first_B")
    weight = np.linspace(-1.0, 1.0, spec.dim).astype(np.float32)
    export_toy_probe(tmp_path / "toy-probe", weight, spec)
    bank = ProbeBank(tmp_path)
    with TestClient(create_probe_app(bank, InProcessBackend(bank))) as client:
        yield ProbeApp(client, "toy-probe", spec, weight)
